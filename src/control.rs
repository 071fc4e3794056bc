//! The control plane: starts the workers, and changes what they run while they run.
//! It owns the bound listening sockets (a duplicate of every worker's socket, so a
//! listener outlives any one worker's view of it), the running configuration, and
//! one control line per worker. Reloads are serialised here; workers apply them
//! between requests (`runtime`, `worker::Worker::apply`).
//!
//! Listeners are identified by their bind address (and, for port 0, their name): a
//! reload that keeps a listener's bind keeps its sockets, so no connection waiting
//! in its accept queue is lost; a new bind is bound before anything changes (a
//! failure leaves everything as it was); a listener that is gone stops accepting
//! on every core and its connections drain.

use crate::access_log;
use crate::admin::Admin;
use crate::config::{Config, ConfigError, ListenerConfig, RuntimeConfig};
use crate::metrics::WorkerMetrics;
use crate::runtime::{
    spawn_worker, Control, Driver, Reload, StartError, WorkerHandle, WorkerStart,
};
use crate::takeover::{ControlSocket, Handed, Inherited};
use crate::worker::ListenerSlot;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a reload waits for each worker to confirm it (a worker applies a
/// reload between two turns of its event loop: milliseconds).
const RELOAD_CONFIRM: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the proxy is draining")]
    Draining,
    #[error("{0}")]
    Workers(String),
}

/// A running proxy. Dropping it stops the workers at once; use `drain` and `join`
/// for a graceful shutdown. Its methods are the control plane's ([`ControlPlane`]),
/// which the admin thread shares.
pub struct Server {
    plane: Arc<ControlPlane>,
}

impl std::ops::Deref for Server {
    type Target = ControlPlane;

    fn deref(&self) -> &ControlPlane {
        &self.plane
    }
}

/// The control plane of a running proxy (see the module docs).
pub struct ControlPlane {
    workers: Vec<WorkerHandle>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    drivers: Vec<Driver>,
    metrics: Vec<Arc<WorkerMetrics>>,
    state: Mutex<State>,
    draining: AtomicBool,
    reloads: Mutex<ReloadCounts>,
    /// Unix time of the start.
    start_time: f64,
    /// Itself, for the admin listeners it starts.
    me: std::sync::Weak<ControlPlane>,
}

/// `ringway_config_reloads_total` and the time of the last successful load.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReloadCounts {
    pub success: u64,
    pub failure: u64,
    /// Unix time of the last successful load (the start, or a reload).
    pub last_success: f64,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct State {
    config: Arc<Config>,
    listeners: Vec<Bound>,
    /// The next listener id (ids are never reused in a process).
    next_id: u32,
    /// The file reloads read (`None`: the embedded default configuration).
    path: Option<PathBuf>,
    admin: Option<Admin>,
    access_log: Option<access_log::Writer>,
    /// `runtime.control_socket`, served for a process that takes over.
    control: Option<ControlSocket>,
}

/// A listener's sockets, one per worker.
struct Bound {
    id: u32,
    key: ListenerKey,
    name: String,
    /// As bound (the real port when the configuration says 0).
    addr: SocketAddr,
    backlog: u32,
    /// The control plane's duplicates of the workers' sockets.
    sockets: Vec<TcpListener>,
}

/// What identifies a listener across reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenerKey {
    bind: SocketAddr,
    /// Only for port 0, where the bind alone does not say which socket is meant.
    name: Option<String>,
}

impl ListenerKey {
    fn of(l: &ListenerConfig) -> ListenerKey {
        ListenerKey {
            bind: l.bind,
            name: (l.bind.port() == 0).then(|| l.name.clone()),
        }
    }
}

/// The listeners of a configuration, bound or kept.
struct Prepared {
    bound: Vec<Bound>,
    slots: Vec<ListenerSlot>,
    /// Each worker's sockets of the listeners that are new.
    per_worker: Vec<Vec<(u32, TcpListener)>>,
}

/// Binds the listeners of `config` that `current` does not have (the sockets of the
/// others are kept). Nothing is changed unless every bind succeeds.
fn prepare(
    current: &[Bound],
    config: &Config,
    workers: usize,
    next_id: &mut u32,
    inherited: &mut Vec<Handed>,
) -> Result<Prepared, ReloadError> {
    let mut bound = Vec::with_capacity(config.listeners.len());
    let mut per_worker: Vec<Vec<(u32, TcpListener)>> = (0..workers).map(|_| Vec::new()).collect();
    let mut id = *next_id;
    for l in &config.listeners {
        let key = ListenerKey::of(l);
        // Kept: the same key, or a bind that names the port a port-0 listener got.
        if let Some(b) = current.iter().find(|b| b.key == key || b.addr == l.bind) {
            let sockets = b
                .sockets
                .iter()
                .map(TcpListener::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| ReloadError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            bound.push(Bound {
                id: b.id,
                key,
                name: l.name.clone(),
                addr: b.addr,
                backlog: b.backlog,
                sockets,
            });
            continue;
        }
        let bind_error = |source| ReloadError::Bind {
            name: l.name.clone(),
            addr: l.bind,
            source,
        };
        let (sockets, addr) = sockets_for(l, workers, inherited).map_err(bind_error)?;
        let mut dups = Vec::with_capacity(sockets.len());
        // More sockets than workers (taken over from a process with more): some
        // workers accept on several.
        for (k, socket) in sockets.into_iter().enumerate() {
            dups.push(socket.try_clone().map_err(bind_error)?);
            per_worker[k % workers].push((id, socket));
        }
        bound.push(Bound {
            id,
            key,
            name: l.name.clone(),
            addr,
            backlog: l.backlog,
            sockets: dups,
        });
        id += 1;
    }
    *next_id = id;
    // A kept listener's new backlog: listen(2) again resizes its queue in place.
    for (b, l) in bound.iter_mut().zip(&config.listeners) {
        if b.backlog != l.backlog {
            for s in &b.sockets {
                if let Err(e) = socket2::SockRef::from(s).listen(l.backlog as i32) {
                    tracing::warn!(listener = %l.name, error = %e, "cannot change the backlog");
                }
            }
            b.backlog = l.backlog;
        }
    }
    let slots = bound
        .iter()
        .map(|b| ListenerSlot {
            id: b.id,
            port: b.addr.port(),
        })
        .collect();
    Ok(Prepared {
        bound,
        slots,
        per_worker,
    })
}

/// A log file that cannot be opened, as a configuration error naming the field.
fn log_error(c: &crate::config::AccessLogConfig, e: std::io::Error) -> ConfigError {
    let path = match &c.path {
        crate::config::LogPath::Stdout => "stdout".to_string(),
        crate::config::LogPath::File(p) => p.display().to_string(),
    };
    ConfigError::new("access_log.path", format!("cannot open {path}: {e}"))
}

/// The sockets of a listener that is new to this process: those a process being
/// replaced handed over for it (plus more bound beside them, SO_REUSEPORT, when
/// this one has more workers), else `workers` freshly bound ones.
fn sockets_for(
    l: &ListenerConfig,
    workers: usize,
    inherited: &mut Vec<Handed>,
) -> std::io::Result<(Vec<TcpListener>, SocketAddr)> {
    let found = inherited.iter().position(|h| {
        h.addr == l.bind || (h.bind == l.bind && (l.bind.port() != 0 || h.name == l.name))
    });
    let Some(found) = found else {
        return crate::listener::bind(l, workers);
    };
    let handed = inherited.swap_remove(found);
    let mut sockets = handed.sockets;
    if sockets.len() < workers {
        let same = ListenerConfig {
            bind: handed.addr,
            ..l.clone()
        };
        let (more, _) = crate::listener::bind(&same, workers - sockets.len())?;
        sockets.extend(more);
    }
    for s in &sockets {
        // The worker's driver decides (`runtime::register_listener`); start blocking.
        s.set_nonblocking(false)?;
    }
    Ok((sockets, handed.addr))
}

/// Settings of `[runtime]` that only a restart (or an upgrade) can change.
fn restart_only_changes(old: &RuntimeConfig, new: &RuntimeConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.workers != new.workers {
        changed.push("runtime.workers");
    }
    if old.pin_workers != new.pin_workers {
        changed.push("runtime.pin_workers");
    }
    if old.require_io_uring != new.require_io_uring {
        changed.push("runtime.require_io_uring");
    }
    if old.io_uring_entries != new.io_uring_entries {
        changed.push("runtime.io_uring_entries");
    }
    if old.io_uring_flags != new.io_uring_flags {
        changed.push("runtime.io_uring_flags");
    }
    if old.control_socket != new.control_socket {
        changed.push("runtime.control_socket");
    }
    changed
}

impl Server {
    pub fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with(config, None)
    }

    /// Starts on the listening sockets a running proxy handed over (see
    /// `takeover`), then tells it to drain: a binary upgrade that loses no
    /// connection.
    pub fn start_with(config: Config, inherited: Option<Inherited>) -> Result<Server, StartError> {
        crate::buf::map_large_allocations(crate::worker::BUF_SIZE);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let count = match config.runtime.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut next_id = 0;
        let (mut handed, takeover) = match inherited {
            Some(mut i) => (std::mem::take(&mut i.listeners), Some(i)),
            None => (Vec::new(), None),
        };
        let prepared =
            prepare(&[], &config, count, &mut next_id, &mut handed).map_err(|e| match e {
                ReloadError::Bind { name, addr, source } => StartError::Bind { name, addr, source },
                other => StartError::Worker(0, other.to_string()),
            })?;
        let writer = config
            .access_log
            .as_ref()
            .map(|c| access_log::Writer::start(c).map_err(|e| log_error(c, e)))
            .transpose()?;
        let config = Arc::new(config);
        let (ready_tx, ready_rx) = mpsc::channel();
        let metrics: Vec<Arc<WorkerMetrics>> = (0..count).map(|_| Arc::default()).collect();
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for (id, sockets) in prepared.per_worker.into_iter().enumerate() {
            let core =
                (config.runtime.pin_workers && !cores.is_empty()).then(|| cores[id % cores.len()]);
            let (handle, thread) = spawn_worker(WorkerStart {
                id,
                core,
                config: config.clone(),
                listeners: prepared.slots.clone(),
                sockets,
                ready: ready_tx.clone(),
                metrics: metrics[id].clone(),
                access_log: writer.as_ref().and_then(access_log::Writer::sink),
            })?;
            workers.push(handle);
            threads.push(thread);
        }
        drop(ready_tx);
        let mut drivers = vec![Driver::Legacy; count];
        let mut failed = None;
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok((id, driver))) => drivers[id] = driver,
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => {
                    failed = Some(StartError::Worker(
                        0,
                        "worker exited during start-up".into(),
                    ));
                    break;
                }
            }
        }
        let admin_config = config.admin.clone();
        let server = Server {
            plane: Arc::new_cyclic(|me| ControlPlane {
                workers,
                threads: Mutex::new(threads),
                drivers,
                metrics,
                state: Mutex::new(State {
                    config,
                    listeners: prepared.bound,
                    next_id,
                    path: None,
                    admin: None,
                    access_log: writer,
                    control: None,
                }),
                draining: AtomicBool::new(false),
                reloads: Mutex::new(ReloadCounts {
                    last_success: unix_now(),
                    ..Default::default()
                }),
                start_time: unix_now(),
                me: me.clone(),
            }),
        };
        // (Dropping `server` on an error stops the workers that started.)
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(admin) = admin_config {
            let started = Admin::start(&admin, server.plane.me.clone()).map_err(|source| {
                StartError::Bind {
                    name: "admin".into(),
                    addr: admin.bind,
                    source,
                }
            })?;
            server.state().admin = Some(started);
        }
        let control_socket = server.config().runtime.control_socket.clone();
        let took_over = takeover.is_some();
        // From here on this process serves: a failure is logged, not fatal (the old
        // process, if it did not drain, serves on beside it on the same sockets).
        if let Some(takeover) = takeover {
            let path = takeover.path().to_path_buf();
            match takeover.finish() {
                Ok(()) => tracing::info!(control_socket = %path.display(),
                    "took over: the old process drains"),
                Err(e) => tracing::error!(error = %e,
                    "takeover: the old process did not confirm its drain"),
            }
        }
        if let Some(path) = control_socket {
            match ControlSocket::start(&path, took_over, server.plane.me.clone()) {
                Ok(started) => server.state().control = Some(started),
                Err(e) if took_over => tracing::error!(error = %e, path = %path.display(),
                    "cannot serve the control socket: no further takeover possible"),
                Err(source) => {
                    return Err(StartError::ControlSocket {
                        path: path.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(server)
    }

    /// Waits for every worker to finish (after `drain`, or a stop).
    /// Then closes the admin listener and the control socket (removing its file
    /// unless a new process took it over): the process is done.
    pub fn join(&self) {
        self.plane.join();
        // Outside the state's lock: the admin thread may be waiting for it.
        let admin = self.state().admin.take();
        if let Some(admin) = admin {
            admin.stop();
        }
        let control = self.state().control.take();
        if let Some(control) = control {
            control.stop();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for w in &self.workers {
            w.send(Control::Stop);
        }
        self.join();
    }
}

impl ControlPlane {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-written that matters
        // more than serving on: take the state as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the file that [`Server::reload_config_file`] reads.
    pub fn set_config_path(&self, path: Option<PathBuf>) {
        self.state().path = path;
    }

    /// The bound address of the listener named `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.state()
            .listeners
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.addr)
    }

    /// Every listener's name and bound address.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.state()
            .listeners
            .iter()
            .map(|b| (b.name.clone(), b.addr))
            .collect()
    }

    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// Each worker's series.
    pub fn worker_metrics(&self) -> &[Arc<WorkerMetrics>] {
        &self.metrics
    }

    pub fn reload_counts(&self) -> ReloadCounts {
        *self.reloads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unix time of the start.
    pub fn start_time(&self) -> f64 {
        self.start_time
    }

    /// The admin listener's bound address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.state().admin.as_ref().map(|a| a.addr)
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.state().config.clone()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Reads the configuration file again (the embedded default when the proxy
    /// runs without one) and applies it: see [`Server::reload`].
    pub fn reload_config_file(&self) -> Result<(), ReloadError> {
        let path = self.state().path.clone();
        let config = match path {
            Some(p) => Config::load(&p),
            None => Ok(Config::default_embedded()),
        };
        match config {
            Ok(config) => self.reload(config),
            Err(e) => {
                let failed = Err(e.into());
                self.count(&failed);
                failed
            }
        }
    }

    /// Counts a reload in `ringway_config_reloads_total`.
    fn count(&self, result: &Result<(), ReloadError>) {
        let mut counts = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                counts.success += 1;
                counts.last_success = unix_now();
            }
            Err(_) => counts.failure += 1,
        }
    }

    /// Replaces the running configuration on every worker, and returns once every
    /// worker serves it. Requests in flight finish on the configuration they
    /// started with. Listeners are kept, bound or closed as described in the
    /// module docs; `[runtime]` settings other than `drain_timeout` need a restart
    /// and are kept as they run (with a warning).
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        crate::notify::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::notify::monotonic_usec()
        ));
        let result = self.apply(config);
        self.count(&result);
        // Whatever the result: systemd waits for READY=1 after RELOADING=1.
        crate::notify::notify("READY=1");
        result
    }

    fn apply(&self, config: Config) -> Result<(), ReloadError> {
        let mut state = self.state();
        if self.is_draining() {
            return Err(ReloadError::Draining);
        }
        let changed = restart_only_changes(&state.config.runtime, &config.runtime);
        if !changed.is_empty() {
            tracing::warn!(settings = ?changed, "reload: these settings need a restart; kept as they run");
        }
        let mut config = config;
        let drain_timeout = config.runtime.drain_timeout;
        config.runtime = RuntimeConfig {
            drain_timeout,
            ..state.config.runtime.clone()
        };
        // A moved admin listener is bound before anything changes, like listeners.
        let new_admin = match (&config.admin, &state.admin) {
            (Some(c), Some(running)) if c.bind == running.config.bind => None,
            (Some(c), _) => {
                Some(
                    Admin::start(c, self.me.clone()).map_err(|source| ReloadError::Bind {
                        name: "admin".into(),
                        addr: c.bind,
                        source,
                    })?,
                )
            }
            (None, _) => None,
        };
        // A new access log file is opened before anything changes too.
        let new_log = match (&config.access_log, &state.access_log) {
            (Some(c), Some(running)) if *c == running.config => None,
            (Some(c), _) => Some(access_log::Writer::start(c).map_err(|e| log_error(c, e))?),
            (None, _) => None,
        };
        let mut next_id = state.next_id;
        let workers = self.workers.len();
        let prepared = prepare(
            &state.listeners,
            &config,
            workers,
            &mut next_id,
            &mut Vec::new(),
        )?;
        state.next_id = next_id;
        let old_log = match (new_log, &config.access_log) {
            (Some(started), _) => state.access_log.replace(started),
            (None, None) => state.access_log.take(),
            (None, Some(_)) => None,
        };
        let sink = state.access_log.as_ref().and_then(access_log::Writer::sink);
        let old_admin = match (new_admin, &config.admin) {
            (Some(started), _) => state.admin.replace(started),
            (None, None) => state.admin.take(),
            (None, Some(c)) => {
                if let Some(running) = &mut state.admin {
                    running.config = c.clone();
                }
                None
            }
        };
        let config = Arc::new(config);
        let (done, confirmations) = mpsc::channel();
        let mut sent = 0;
        for (w, sockets) in self.workers.iter().zip(prepared.per_worker) {
            let reload = Reload {
                config: config.clone(),
                listeners: prepared.slots.clone(),
                sockets,
                access_log: sink.clone(),
                done: done.clone(),
            };
            if w.send(Control::Reload(Box::new(reload))) {
                sent += 1;
            }
        }
        drop(done);
        let mut errors = Vec::new();
        for _ in 0..sent {
            match confirmations.recv_timeout(RELOAD_CONFIRM) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => {
                    errors.push("a worker did not confirm the reload".to_string());
                    break;
                }
            }
        }
        // Workers that confirmed serve the new configuration: it is the running one
        // now, whatever the others said.
        state.config = config;
        state.listeners = prepared.bound;
        drop(state);
        // Outside the lock: its thread may be waiting for it (or be this thread).
        if let Some(admin) = old_admin {
            admin.stop();
        }
        // Its thread writes what the workers handed over before they switched, and
        // ends with the last sink (not waited for: a worker that failed to switch
        // keeps one).
        if let Some(old) = old_log {
            old.retire();
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ReloadError::Workers(errors.join("; ")))
        }
    }

    /// Starts a graceful shutdown: stop accepting, close idle connections, let
    /// in-flight requests finish (answered with `Connection: close`) for up to
    /// `runtime.drain_timeout`.
    pub fn drain(&self) {
        self.drain_as(true);
    }

    /// The drain of a process a new one took over from: the service is not
    /// stopping, so systemd hears nothing.
    pub fn drain_handed_over(&self) {
        self.drain_as(false);
    }

    fn drain_as(&self, stopping: bool) {
        let mut state = self.state();
        // Once: a second request (POST /drain retried, then SIGTERM) must not cut
        // the first drain short.
        if self.draining.swap(true, Ordering::Relaxed) {
            return;
        }
        if stopping {
            crate::notify::notify("STOPPING=1");
        }
        for w in &self.workers {
            w.send(Control::Drain(state.config.runtime.drain_timeout));
        }
        // The sockets close once the workers' accept loops end too: new connections
        // are refused rather than left waiting in a queue nobody accepts from.
        for b in &mut state.listeners {
            b.sockets.clear();
        }
    }

    /// Waits for every worker to finish (after `drain`, or a stop), then for the
    /// access log's last lines to be written.
    pub fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        let writer = self.state().access_log.take();
        drop(writer);
    }

    /// Duplicates of every listener's sockets, for a process taking over.
    pub fn handover(&self) -> std::io::Result<Vec<Handed>> {
        self.state()
            .listeners
            .iter()
            .map(|b| {
                Ok(Handed {
                    name: b.name.clone(),
                    bind: b.key.bind,
                    addr: b.addr,
                    sockets: b
                        .sockets
                        .iter()
                        .map(TcpListener::try_clone)
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }

    /// Reopens the access log file (SIGUSR1, after logrotate moved it).
    pub fn reopen_logs(&self) {
        if let Some(w) = &self.state().access_log {
            w.reopen(); // never waits
        }
    }

    /// Access log lines lost to write errors.
    pub fn access_log_failed(&self) -> u64 {
        self.state()
            .access_log
            .as_ref()
            .map_or(0, |w| w.failed.load(Ordering::Relaxed))
    }
}
