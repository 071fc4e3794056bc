//! Worker threads and their event loops: one OS thread per worker, pinned to a core,
//! each running its own monoio runtime (io_uring, or the legacy epoll driver when
//! io_uring is unavailable and not required). Control messages (reload, drain,
//! stop) reach the workers over channels from the control plane (`control`);
//! nothing else crosses cores.
//!
//! A worker's event loop is woken for a control message by a byte on a socket pair
//! (its "bell"), which it reads like any socket: the kernel does the cross-thread
//! waking. So monoio runs without its `sync` feature, which would make every turn
//! of every loop poll a channel of foreign wakers (about 120 instructions per
//! proxied request, measured with callgrind) for messages that come once a run.

use crate::config::{Config, RingFlags};
use crate::worker::{ListenerSlot, Worker};
use monoio::io::AsyncReadRent;
use std::io;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Why a worker cannot fall back to the epoll driver.
#[cfg(feature = "epoll-fallback")]
const NO_FALLBACK: &str = "runtime.require_io_uring is set";
#[cfg(not(feature = "epoll-fallback"))]
const NO_FALLBACK: &str =
    "this build has no epoll fallback (built without the epoll-fallback feature)";

/// Which monoio driver a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Legacy,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("io_uring is unavailable ({0}) and {NO_FALLBACK}")]
    NoIoUring(String),
    #[error("worker {0}: {1}")]
    Worker(usize, String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("control socket {path}: {source}")]
    ControlSocket { path: String, source: io::Error },
}

pub(crate) enum Control {
    Drain(Duration),
    Stop,
    Reload(Box<Reload>),
}

/// A new configuration for one worker.
pub(crate) struct Reload {
    pub config: Arc<Config>,
    /// The id and port of each of `config.listeners`.
    pub listeners: Vec<ListenerSlot>,
    /// This worker's sockets of the listeners that are new, by id.
    pub sockets: Vec<(u32, std::net::TcpListener)>,
    /// The access log to write through from now on.
    pub access_log: Option<crate::access_log::Sink>,
    /// Told when the worker serves the new configuration, or why it could not.
    pub done: mpsc::Sender<Result<(), String>>,
}

pub(crate) struct WorkerHandle {
    control: mpsc::Sender<Control>,
    /// The control plane's end of the worker's bell (non-blocking).
    bell: UnixStream,
}

impl WorkerHandle {
    /// Queues `c` and rings the bell; false when the worker has ended. A full bell
    /// already has a ring pending: fine to ignore.
    pub fn send(&self, c: Control) -> bool {
        if self.control.send(c).is_err() {
            return false;
        }
        let _ = (&self.bell).write(&[1]);
        true
    }
}

/// A worker's side of its control line.
struct Inbox {
    rx: mpsc::Receiver<Control>,
    bell: monoio::net::UnixStream,
    buf: Vec<u8>,
}

impl Inbox {
    /// The next control message. `Stop` once the `Server` is gone (the channel and
    /// the bell closed) or the bell fails.
    async fn recv(&mut self) -> Control {
        loop {
            match self.rx.try_recv() {
                Ok(c) => return c,
                Err(mpsc::TryRecvError::Disconnected) => return Control::Stop,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            let (res, buf) = self.bell.read(buf).await;
            self.buf = buf;
            match res {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EOF or an error: whatever was queued first, then stop.
                _ => return self.rx.try_recv().unwrap_or(Control::Stop),
            }
        }
    }
}

pub(crate) type Ready = mpsc::Sender<Result<(usize, Driver), StartError>>;

/// What a worker thread starts with.
pub(crate) struct WorkerStart {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub config: Arc<Config>,
    pub listeners: Vec<ListenerSlot>,
    /// This worker's socket of each listener, by id.
    pub sockets: Vec<(u32, std::net::TcpListener)>,
    pub ready: Ready,
    pub metrics: Arc<crate::metrics::WorkerMetrics>,
    pub access_log: Option<crate::access_log::Sink>,
}

/// Starts a worker thread; it reports to `start.ready` once it serves, or why not.
pub(crate) fn spawn_worker(
    start: WorkerStart,
) -> Result<(WorkerHandle, JoinHandle<()>), StartError> {
    let id = start.id;
    let (control, rx) = mpsc::channel();
    let (bell, worker_bell) = UnixStream::pair()
        .and_then(|(a, b)| a.set_nonblocking(true).map(|()| (a, b)))
        .map_err(|e| StartError::Worker(id, format!("control socket pair: {e}")))?;
    let thread = std::thread::Builder::new()
        .name(format!("ringway-w{id}"))
        .spawn(move || run_worker(start, (rx, worker_bell)))
        .map_err(|e| StartError::Worker(id, e.to_string()))?;
    Ok((WorkerHandle { control, bell }, thread))
}

const NO_FLAGS: RingFlags = RingFlags {
    single_issuer: false,
    defer_taskrun: false,
    coop_taskrun: false,
};

fn ring_builder(flags: RingFlags) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    if flags.single_issuer {
        b.setup_single_issuer();
    }
    if flags.defer_taskrun {
        b.setup_defer_taskrun();
    }
    if flags.coop_taskrun {
        b.setup_coop_taskrun();
    }
    b
}

/// A worker's control line as handed to its thread: the channel and its bell.
type ControlLine = (mpsc::Receiver<Control>, UnixStream);

fn run_worker(start: WorkerStart, control: ControlLine) {
    let id = start.id;
    if let Some(core) = start.core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(
                worker = id,
                core = core.id,
                "could not pin worker to its core"
            );
        }
    }
    let rt_config = start.config.runtime.clone();
    let built = if monoio::utils::detect_uring() {
        let build = |flags: RingFlags| {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(rt_config.io_uring_entries)
                .uring_builder(ring_builder(flags))
                .enable_timer()
                .build()
        };
        let mut flags = rt_config.io_uring_flags;
        let mut built = build(flags);
        if let Err(e) = &built {
            if flags != NO_FLAGS {
                // An older kernel rejects newer setup flags (EINVAL): run without them.
                tracing::warn!(worker = id, error = %e, ?flags,
                    "io_uring setup flags refused; building the ring without them");
                flags = NO_FLAGS;
                built = build(flags);
            }
        }
        built.map(|rt| (rt, flags)).map_err(|e| e.to_string())
    } else {
        Err("not supported by this kernel".to_string())
    };
    match built {
        Ok((mut rt, flags)) => {
            tracing::info!(
                worker = id,
                driver = "io_uring",
                entries = rt_config.io_uring_entries,
                ?flags,
                "worker started"
            );
            rt.block_on(run(start, control, Driver::IoUring));
        }
        Err(reason) if rt_config.require_io_uring => {
            let _ = start.ready.send(Err(StartError::NoIoUring(reason)));
        }
        Err(reason) => fall_back(start, control, reason),
    }
}

/// Runs the worker on the epoll driver, io_uring being unavailable for `reason`.
#[cfg(feature = "epoll-fallback")]
fn fall_back(start: WorkerStart, control: ControlLine, reason: String) {
    let id = start.id;
    tracing::warn!(
        worker = id,
        reason,
        "io_uring unavailable: falling back to the legacy epoll driver (slower)"
    );
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(run(start, control, Driver::Legacy)),
        Err(e) => {
            let _ = start.ready.send(Err(StartError::Worker(id, e.to_string())));
        }
    }
}

/// A build without the epoll driver does not start without io_uring.
#[cfg(not(feature = "epoll-fallback"))]
fn fall_back(start: WorkerStart, _control: ControlLine, reason: String) {
    let _ = start.ready.send(Err(StartError::NoIoUring(reason)));
}

/// A listening socket registered with the worker's driver.
fn register_listener(
    socket: std::net::TcpListener,
    driver: Driver,
) -> Result<monoio::net::TcpListener, String> {
    // The epoll driver needs non-blocking sockets; io_uring must not have them (an
    // O_NONBLOCK file makes io_uring return EAGAIN instead of waiting).
    let _ = socket.set_nonblocking(driver == Driver::Legacy);
    monoio::net::TcpListener::from_std(socket)
        .map_err(|e| format!("cannot register a listener: {e}"))
}

/// Registers `sockets` (by listener id) with the driver: all or none.
fn register_all(
    sockets: Vec<(u32, std::net::TcpListener)>,
    driver: Driver,
) -> Result<Vec<(u32, monoio::net::TcpListener)>, String> {
    sockets
        .into_iter()
        .map(|(id, s)| register_listener(s, driver).map(|s| (id, s)))
        .collect()
}

/// Starts an accept loop on each socket, for the worker's listener of its id.
fn accept_on(worker: &Rc<Worker>, sockets: Vec<(u32, monoio::net::TcpListener)>) {
    for (id, socket) in sockets {
        if let Some(listener) = worker.listener(id) {
            monoio::spawn(crate::listener::accept_loop(
                worker.clone(),
                listener,
                socket,
            ));
        }
    }
}

/// Applies a reload on this worker: registers the new listeners' sockets first (a
/// failure leaves the running configuration as it was), then swaps the snapshot.
fn reload(worker: &Rc<Worker>, r: Reload, driver: Driver) -> Result<(), String> {
    let sockets = register_all(r.sockets, driver)?;
    worker.apply(&r.config, &r.listeners);
    worker.set_access_log(r.access_log);
    accept_on(worker, sockets);
    Ok(())
}

/// A worker's main task: accept loops, the pool sweeper, and the control channel.
/// Reports to `ready` once its sockets are registered with the driver, or why not.
async fn run(start: WorkerStart, (rx, bell): ControlLine, driver: Driver) {
    let WorkerStart {
        id,
        config,
        listeners,
        sockets,
        ready,
        metrics,
        access_log,
        ..
    } = start;
    let worker = Rc::new(Worker::new(id, &config, &listeners, metrics, access_log));
    drop(config);
    let _ = bell.set_nonblocking(driver == Driver::Legacy);
    let started = monoio::net::UnixStream::from_std(bell)
        .map_err(|e| format!("cannot register the control socket: {e}"))
        .and_then(|bell| register_all(sockets, driver).map(|sockets| (bell, sockets)));
    let mut control = match started {
        Ok((bell, sockets)) => {
            accept_on(&worker, sockets);
            Inbox {
                rx,
                bell,
                buf: Vec::with_capacity(16),
            }
        }
        Err(e) => {
            // Without its bell the worker could not be stopped, and without a
            // listener it would serve less than configured: the server does not start.
            let _ = ready.send(Err(StartError::Worker(id, e)));
            worker.start_drain();
            return;
        }
    };
    let _ = ready.send(Ok((id, driver)));
    drop(ready);
    let sweeper = worker.clone();
    monoio::spawn(async move {
        loop {
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_secs(1)) => {
                    sweeper.endpoints.sweep(crate::clock::Moment::now());
                    sweeper.bufs.sweep();
                    sweeper.flush_log();
                }
                // (Also while draining: pools expire, log lines go out.)
                _ = sweeper.lifecycle.wait(|| sweeper.lifecycle.is_stopped()) => return,
            }
        }
    });
    let drain_timeout = loop {
        match control.recv().await {
            Control::Reload(r) => {
                let done = r.done.clone();
                let _ = done.send(reload(&worker, *r, driver));
            }
            Control::Drain(timeout) => break Some(timeout),
            Control::Stop => break None,
        }
    };
    if let Some(timeout) = drain_timeout {
        tracing::info!(worker = id, active = worker.lifecycle.active(), "draining");
        worker.start_drain();
        let mut expired = std::pin::pin!(monoio::time::sleep(timeout));
        loop {
            monoio::select! {
                _ = worker.lifecycle.all_closed() => break,
                _ = &mut expired => {
                    tracing::warn!(worker = id, active = worker.lifecycle.active(),
                        "drain timeout: closing remaining connections");
                    break;
                }
                c = control.recv() => match c {
                    Control::Reload(r) => {
                        let _ = r.done.send(Err("the proxy is draining".into()));
                    }
                    Control::Drain(_) => {}
                    Control::Stop => break,
                },
            }
        }
    }
    // Tasks still pending when the runtime exits would never be dropped, and their
    // sockets never closed: end every connection task here, inside the runtime.
    worker.start_drain();
    worker.lifecycle.stop();
    worker.lifecycle.all_closed().await;
    worker.endpoints.clear();
    worker.set_access_log(None);
    // io_uring closes sockets with queued Close operations; park once so the
    // driver submits them before the ring is torn down.
    monoio::time::sleep(Duration::from_millis(1)).await;
}
