//! The `ringway` command: run the proxy, or check a configuration file.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ringway::{Config, Server};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "ringway",
    version,
    about = "HTTP/1.1 edge proxy and load balancer (thread-per-core, io_uring)"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded default config is used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG wins.
    #[arg(long, default_value = "info", global = true)]
    log_level: String,
    /// Binary upgrade: take the listening sockets over from the proxy serving
    /// runtime.control_socket, then tell it to drain.
    #[arg(long)]
    takeover: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration and print a summary; exit status 0 when valid.
    Check,
}

fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let result = match cli.command {
        Some(Command::Check) => check(cli.config),
        None => run(cli.config, cli.takeover),
    };
    if let Err(e) = result {
        eprintln!("ringway: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => {
            Config::load(p).with_context(|| format!("invalid configuration {}", p.display()))
        }
        None => Ok(Config::default_embedded()),
    }
}

fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let path = path.context("`check` needs --config FILE")?;
    let config = load(Some(&path))?;
    println!("{}: configuration is valid", path.display());
    print!("{config}");
    Ok(())
}

fn run(path: Option<PathBuf>, takeover: bool) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    if path.is_none() {
        tracing::info!("no --config given: running the embedded default configuration");
    }
    let config = load(path.as_ref())?;
    // Handlers installed before the workers start: a signal that arrives meanwhile is
    // not lost to its default action (SIGHUP would end the process).
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
            .context("cannot install signal handlers")?;
    let inherited = if takeover {
        let socket = config
            .runtime
            .control_socket
            .clone()
            .context("--takeover needs runtime.control_socket in the configuration")?;
        Some(ringway::takeover::fetch(&socket)?)
    } else {
        None
    };
    let server = Arc::new(Server::start_with(config, inherited).context("cannot start")?);
    server.set_config_path(path);
    for (name, addr) in server.addrs() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let Some(addr) = server.admin_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    // Every worker serves (Server::start returns once they all do; after a
    // takeover, this process has told systemd it is the main one).
    ringway::notify::notify("READY=1");
    let handle = signals.handle();
    let control = server.clone();
    std::thread::Builder::new()
        .name("ringway-signals".into())
        .spawn(move || {
            let mut draining = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload(&control),
                    SIGUSR1 => control.reopen_logs(),
                    SIGUSR2 => upgrade(&control),
                    _ if draining => {
                        tracing::warn!(signal, "second signal: exiting now");
                        std::process::exit(0);
                    }
                    _ => {
                        tracing::info!(signal, "shutting down: draining connections");
                        draining = true;
                        control.drain();
                    }
                }
            }
        })
        .context("cannot start the signal thread")?;
    // Returns once every worker has ended: after a drain.
    server.join();
    handle.close();
    tracing::info!("stopped");
    Ok(())
}

/// SIGUSR2: starts the binary found at the path this one was started from (a new
/// version installed over it), with the same arguments and `--takeover`, as nginx
/// does on USR2; it takes the listening sockets over and this process drains. The
/// child stays in this process's service (cgroup), and tells systemd it is the
/// main process now.
fn upgrade(server: &Server) {
    if server.config().runtime.control_socket.is_none() {
        tracing::error!("upgrade (SIGUSR2) needs runtime.control_socket");
        return;
    }
    if server.is_draining() {
        tracing::warn!("upgrade (SIGUSR2) ignored: this process is draining");
        return;
    }
    let mut args = std::env::args_os();
    let Some(program) = args.next() else {
        tracing::error!("upgrade (SIGUSR2): no program path in the arguments");
        return;
    };
    let mut args: Vec<_> = args.collect();
    if !args.iter().any(|a| a == "--takeover") {
        args.push("--takeover".into());
    }
    match std::process::Command::new(&program).args(&args).spawn() {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), program = ?program, "upgrade: new process started");
            // Reaped if it fails (it outlives this process when it succeeds).
            let _ = std::thread::Builder::new()
                .name("ringway-upgrade".into())
                .spawn(move || {
                    if let Ok(status) = child.wait() {
                        if !status.success() {
                            tracing::error!(%status, "upgrade: the new process failed; serving on");
                        }
                    }
                });
        }
        Err(e) => {
            tracing::error!(error = %e, program = ?program, "upgrade: cannot start the new binary")
        }
    }
}

/// SIGHUP: re-reads the configuration file and applies it.
fn reload(server: &Server) {
    match server.reload_config_file() {
        Ok(()) => {
            tracing::info!("configuration reloaded");
            for (name, addr) in server.addrs() {
                tracing::debug!(listener = %name, %addr, "listening");
            }
        }
        Err(e @ ringway::control::ReloadError::Workers(_)) => {
            tracing::error!(error = %e, "reload failed on some workers")
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed: the running configuration is unchanged")
        }
    }
}
