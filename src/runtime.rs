//! Threads and their event loops: one OS thread per worker, pinned to a core, each
//! running its own monoio runtime (io_uring, or the legacy epoll driver when io_uring
//! is unavailable and not required). Control messages (drain, stop) reach the
//! workers over channels; nothing else crosses cores.
//!
//! A worker's event loop is woken for a control message by a byte on a socket pair
//! (its "bell"), which it reads like any socket: the kernel does the cross-thread
//! waking. So monoio runs without its `sync` feature, which would make every turn
//! of every loop poll a channel of foreign wakers (about 120 instructions per
//! proxied request, measured with callgrind) for messages that come once a run.

use crate::config::{Config, RingFlags};
use crate::worker::Worker;
use monoio::io::AsyncReadRent;
use std::io;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
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
}

#[derive(Debug, Clone, Copy)]
enum Control {
    Drain(Duration),
    Stop,
}

struct WorkerHandle {
    thread: Option<JoinHandle<()>>,
    control: mpsc::Sender<Control>,
    /// The main thread's end of the worker's bell (non-blocking).
    bell: UnixStream,
}

impl WorkerHandle {
    /// Queues `c` and rings the bell. A full bell already has a ring pending, and a
    /// closed one belongs to a worker that has ended: both are fine to ignore.
    fn send(&self, c: Control) {
        if self.control.send(c).is_ok() {
            let _ = (&self.bell).write(&[1]);
        }
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

/// A running proxy. Dropping it stops the workers at once; use `drain` and `join`
/// for a graceful shutdown.
pub struct Server {
    workers: Vec<WorkerHandle>,
    addrs: Vec<(String, SocketAddr)>,
    drivers: Vec<Driver>,
    drain_timeout: Duration,
}

impl Server {
    pub fn start(config: Config) -> Result<Server, StartError> {
        crate::buf::map_large_allocations(crate::worker::BUF_SIZE);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let count = match config.runtime.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut per_worker: Vec<Vec<std::net::TcpListener>> =
            (0..count).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for l in &config.listeners {
            let (sockets, addr) =
                crate::listener::bind(l, count).map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            for (i, s) in sockets.into_iter().enumerate() {
                per_worker[i].push(s);
            }
            addrs.push((l.name.clone(), addr));
        }
        let ports: Vec<u16> = addrs.iter().map(|(_, a)| a.port()).collect();
        let config = std::sync::Arc::new(config);
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut workers = Vec::with_capacity(count);
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let (control, rx) = mpsc::channel();
            let (bell, worker_bell) = UnixStream::pair()
                .and_then(|(a, b)| a.set_nonblocking(true).map(|()| (a, b)))
                .map_err(|e| StartError::Worker(id, format!("control socket pair: {e}")))?;
            let core =
                (config.runtime.pin_workers && !cores.is_empty()).then(|| cores[id % cores.len()]);
            let config = config.clone();
            let ports = ports.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ringway-w{id}"))
                .spawn(move || {
                    let control = (rx, worker_bell);
                    run_worker(id, core, &config, listeners, ports, control, ready)
                })
                .map_err(|e| StartError::Worker(id, e.to_string()))?;
            workers.push(WorkerHandle {
                thread: Some(thread),
                control,
                bell,
            });
        }
        drop(ready_tx);
        let mut server = Server {
            workers,
            addrs,
            drivers: vec![Driver::Legacy; count],
            drain_timeout: config.runtime.drain_timeout,
        };
        for _ in 0..count {
            match ready_rx.recv() {
                Ok(Ok((id, driver))) => server.drivers[id] = driver,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(StartError::Worker(
                        0,
                        "worker exited during start-up".into(),
                    ))
                }
            }
        }
        Ok(server)
    }

    /// The bound address of the listener named `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    pub fn drivers(&self) -> &[Driver] {
        &self.drivers
    }

    /// Starts a graceful shutdown: stop accepting, close idle connections, let
    /// in-flight requests finish (answered with `Connection: close`) for up to
    /// `runtime.drain_timeout`.
    pub fn drain(&self) {
        for w in &self.workers {
            w.send(Control::Drain(self.drain_timeout));
        }
    }

    /// Waits for every worker to finish (after `drain`, or a stop).
    pub fn join(mut self) {
        self.join_threads();
    }

    fn join_threads(&mut self) {
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                if t.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for w in &self.workers {
            w.send(Control::Stop);
        }
        self.join_threads();
    }
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

type Ready = mpsc::Sender<Result<(usize, Driver), StartError>>;

/// A worker's control line as handed to its thread: the channel and its bell.
type ControlLine = (mpsc::Receiver<Control>, UnixStream);

fn run_worker(
    id: usize,
    core: Option<core_affinity::CoreId>,
    config: &Config,
    listeners: Vec<std::net::TcpListener>,
    ports: Vec<u16>,
    control: ControlLine,
    ready: Ready,
) {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(
                worker = id,
                core = core.id,
                "could not pin worker to its core"
            );
        }
    }
    let worker = Rc::new(Worker::new(id, config, &ports));
    let rt_config = &config.runtime;
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
            rt.block_on(run(worker, listeners, control, Driver::IoUring, ready));
        }
        Err(reason) if rt_config.require_io_uring => {
            let _ = ready.send(Err(StartError::NoIoUring(reason)));
        }
        Err(reason) => fall_back(worker, listeners, control, ready, reason),
    }
}

/// Runs the worker on the epoll driver, io_uring being unavailable for `reason`.
#[cfg(feature = "epoll-fallback")]
fn fall_back(
    worker: Rc<Worker>,
    listeners: Vec<std::net::TcpListener>,
    control: ControlLine,
    ready: Ready,
    reason: String,
) {
    let id = worker.id;
    tracing::warn!(
        worker = id,
        reason,
        "io_uring unavailable: falling back to the legacy epoll driver (slower)"
    );
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(run(worker, listeners, control, Driver::Legacy, ready)),
        Err(e) => {
            let _ = ready.send(Err(StartError::Worker(id, e.to_string())));
        }
    }
}

/// A build without the epoll driver does not start without io_uring.
#[cfg(not(feature = "epoll-fallback"))]
fn fall_back(
    _worker: Rc<Worker>,
    _listeners: Vec<std::net::TcpListener>,
    _control: ControlLine,
    ready: Ready,
    reason: String,
) {
    let _ = ready.send(Err(StartError::NoIoUring(reason)));
}

/// The worker's control bell and listeners, registered with its runtime's driver.
fn register(
    (rx, bell): ControlLine,
    listeners: Vec<std::net::TcpListener>,
    driver: Driver,
) -> Result<(Inbox, Vec<monoio::net::TcpListener>), String> {
    if driver == Driver::Legacy {
        let _ = bell.set_nonblocking(true);
    }
    let bell = monoio::net::UnixStream::from_std(bell)
        .map_err(|e| format!("cannot register the control socket: {e}"))?;
    let control = Inbox {
        rx,
        bell,
        buf: Vec::with_capacity(16),
    };
    let listeners = listeners
        .into_iter()
        .map(|l| {
            if driver == Driver::Legacy {
                // The epoll driver needs non-blocking sockets; io_uring must not have
                // them (an O_NONBLOCK file makes io_uring return EAGAIN instead of waiting).
                let _ = l.set_nonblocking(true);
            }
            monoio::net::TcpListener::from_std(l)
                .map_err(|e| format!("cannot register a listener: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((control, listeners))
}

/// A worker's main task: accept loops, the pool sweeper, and the control channel.
/// Reports to `ready` once its sockets are registered with the driver, or why not.
async fn run(
    worker: Rc<Worker>,
    listeners: Vec<std::net::TcpListener>,
    control: ControlLine,
    driver: Driver,
    ready: Ready,
) {
    let id = worker.id;
    let (mut control, listeners) = match register(control, listeners, driver) {
        Ok(registered) => registered,
        Err(e) => {
            // Without its bell the worker could not be stopped, and without a
            // listener it would serve less than configured: the server does not start.
            let _ = ready.send(Err(StartError::Worker(id, e)));
            return;
        }
    };
    for (index, l) in listeners.into_iter().enumerate() {
        monoio::spawn(crate::listener::accept_loop(worker.clone(), index, l));
    }
    let _ = ready.send(Ok((id, driver)));
    let sweeper = worker.clone();
    monoio::spawn(async move {
        loop {
            monoio::select! {
                _ = monoio::time::sleep(Duration::from_secs(1)) => {
                    sweeper.pool.sweep(crate::clock::Moment::now());
                    sweeper.bufs.sweep();
                }
                _ = sweeper.lifecycle.draining() => return,
            }
        }
    });
    if let Control::Drain(timeout) = control.recv().await {
        tracing::info!(
            worker = worker.id,
            active = worker.lifecycle.active(),
            "draining"
        );
        worker.lifecycle.start_drain();
        monoio::select! {
            _ = worker.lifecycle.all_closed() => {}
            _ = monoio::time::sleep(timeout) => {
                tracing::warn!(worker = worker.id, active = worker.lifecycle.active(),
                    "drain timeout: closing remaining connections");
            }
            _ = control.recv() => {}
        }
    }
    // Tasks still pending when the runtime exits would never be dropped, and their
    // sockets never closed: end every connection task here, inside the runtime.
    worker.lifecycle.stop();
    worker.lifecycle.all_closed().await;
    worker.pool.clear();
    // io_uring closes sockets with queued Close operations; park once so the
    // driver submits them before the ring is torn down.
    monoio::time::sleep(Duration::from_millis(1)).await;
}
