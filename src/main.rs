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
        None => run(cli.config),
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

fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    if path.is_none() {
        tracing::info!("no --config given: running the embedded default configuration");
    }
    let config = load(path.as_ref())?;
    // Block the signals before workers start so only this thread receives them.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    let server = Arc::new(Server::start(config).context("cannot start")?);
    server.set_config_path(path);
    for (name, addr) in server.addrs() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let Some(addr) = server.admin_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    // Every worker serves (Server::start returns once they all do).
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
