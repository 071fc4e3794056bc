//! Per-core state: the current configuration snapshot (replaced by reloads), the
//! listeners and upstream endpoints whose state outlives snapshots, the buffer pool,
//! date cache and the connection lifecycle used for draining. Everything here is
//! `Rc`/`Cell`/`RefCell`: it never leaves its core.

use crate::access_log::{CoreLog, Record, Sink};
use crate::buf::BufPool;
use crate::clock::DateCache;
use crate::config::Config;
use crate::http::answer::ErrorAnswers;
use crate::metrics::WorkerMetrics;
use crate::snapshot::{register_listeners, ListenerRt, Snapshot};
use crate::upstream::endpoint::Endpoints;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Size of per-request buffers (upstream reads, rewritten heads).
pub const BUF_SIZE: usize = 16 * 1024;
/// Buffers kept in the pool however long it stays idle (a sweep frees the rest of
/// what went unused for a whole period): enough for a few requests at once.
const BUFS_FLOOR: usize = 16;

/// A listener of a configuration as a core gets it: its stable id, its bound port.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSlot {
    pub id: u32,
    pub port: u16,
}

pub struct Worker {
    pub id: usize,
    /// Read without a lock: a request clones the `Rc` once (`snapshot()`).
    snapshot: RefCell<Rc<Snapshot>>,
    pub endpoints: Endpoints,
    /// The listeners of the current configuration.
    listeners: RefCell<Vec<Rc<ListenerRt>>>,
    pub errors: ErrorAnswers,
    pub bufs: BufPool,
    pub date: DateCache,
    pub lifecycle: Lifecycle,
    /// This core's series (the control plane reads them when scraped).
    pub metrics: Arc<WorkerMetrics>,
    access_log: RefCell<Option<CoreLog>>,
    /// Whether `access_log` is set (asked for every request).
    logging: Cell<bool>,
    rng: Cell<u64>,
}

impl Worker {
    /// `listeners`: the id and bound port of each of `config.listeners`.
    pub fn new(
        id: usize,
        config: &Config,
        listeners: &[ListenerSlot],
        metrics: Arc<WorkerMetrics>,
        access_log: Option<Sink>,
    ) -> Worker {
        let endpoints = Endpoints::default();
        let ids: Vec<u32> = listeners.iter().map(|l| l.id).collect();
        let snapshot = Snapshot::build(config, &ids, id, &endpoints, &metrics);
        let live: Vec<Rc<ListenerRt>> = config
            .listeners
            .iter()
            .zip(listeners)
            .map(|(c, l)| Rc::new(ListenerRt::new(l.id, c.clone(), l.port)))
            .collect();
        register_listeners(&metrics, &live, &[]);
        Worker {
            id,
            snapshot: RefCell::new(Rc::new(snapshot)),
            endpoints,
            listeners: RefCell::new(live),
            errors: ErrorAnswers::new(),
            bufs: BufPool::new(BUF_SIZE, 256, BUFS_FLOOR),
            date: DateCache::new(),
            lifecycle: Lifecycle::default(),
            metrics,
            logging: Cell::new(access_log.is_some()),
            access_log: RefCell::new(access_log.map(CoreLog::new)),
            rng: Cell::new(seed(id)),
        }
    }

    /// The current configuration; a request takes it once and finishes on it.
    #[inline]
    pub fn snapshot(&self) -> Rc<Snapshot> {
        Rc::clone(&self.snapshot.borrow())
    }

    /// Whether requests are logged (connections then keep their fields).
    #[inline]
    pub fn logs_requests(&self) -> bool {
        self.logging.get()
    }

    /// Writes the access log line of a request (when there is an access log).
    #[inline]
    pub fn log_request(&self, r: &Record<'_>) {
        if let Some(log) = &*self.access_log.borrow() {
            log.write(r, &self.metrics.access_log_dropped);
        }
    }

    /// Hands the buffered access log lines to the writer (once a second, on drain
    /// and reload).
    pub fn flush_log(&self) {
        if let Some(log) = &*self.access_log.borrow() {
            log.flush(&self.metrics.access_log_dropped);
        }
    }

    /// Logs through `sink` from now on (a reload), after flushing the old buffer.
    pub fn set_access_log(&self, sink: Option<Sink>) {
        self.flush_log();
        self.logging.set(sink.is_some());
        *self.access_log.borrow_mut() = sink.map(CoreLog::new);
    }

    /// The current listener with this id.
    pub fn listener(&self, id: u32) -> Option<Rc<ListenerRt>> {
        self.listeners.borrow().iter().find(|l| l.id == id).cloned()
    }

    /// Replaces the configuration (a reload). Listeners whose id is kept get the new
    /// settings; new ones are added (the caller starts accepting on them); those
    /// not in `listeners` any more close (their accept loops end, their
    /// connections drain).
    pub fn apply(&self, config: &Config, listeners: &[ListenerSlot]) {
        let mut next = Vec::with_capacity(listeners.len());
        {
            let current = self.listeners.borrow();
            for (c, slot) in config.listeners.iter().zip(listeners) {
                match current.iter().find(|l| l.id == slot.id) {
                    Some(l) => {
                        l.configure(c.clone());
                        next.push(Rc::clone(l));
                    }
                    None => next.push(Rc::new(ListenerRt::new(slot.id, c.clone(), slot.port))),
                }
            }
        }
        let old = std::mem::replace(&mut *self.listeners.borrow_mut(), next);
        let gone: Vec<Rc<ListenerRt>> = old
            .into_iter()
            .filter(|l| !listeners.iter().any(|s| s.id == l.id))
            .collect();
        for l in &gone {
            l.close();
        }
        let removed = !gone.is_empty();
        register_listeners(&self.metrics, &self.listeners.borrow(), &gone);
        let ids: Vec<u32> = listeners.iter().map(|l| l.id).collect();
        let snapshot = Snapshot::build(config, &ids, self.id, &self.endpoints, &self.metrics);
        *self.snapshot.borrow_mut() = Rc::new(snapshot);
        drop(gone);
        self.metrics.prune();
        if removed {
            // Idle connections of the removed listeners notice and close.
            self.lifecycle.nudge();
        }
    }

    /// Starts draining: every listener closes (accept loops end, idle connections
    /// close, in-flight requests finish with `Connection: close`).
    pub fn start_drain(&self) {
        for l in self.listeners.borrow().iter() {
            l.close();
        }
        self.lifecycle.start_drain();
    }

    /// wyrand: a fast per-core generator for request ids (not for secrets).
    fn next_u64(&self) -> u64 {
        let s = self.rng.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.rng.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    }

    /// A WebSocket opening handshake's nonce (RFC 6455 §4.1): 16 random bytes in
    /// base64 (for an HTTP/2 client's WebSocket, which sends none: RFC 8441 §5).
    pub fn websocket_key(&self) -> [u8; 24] {
        use base64::Engine;
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        raw[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        let mut key = [0u8; 24];
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(raw, &mut key);
        key
    }

    /// Appends a random UUID (version 4 layout) to `out`.
    pub fn write_request_id(&self, out: &mut Vec<u8>) {
        let hi = self.next_u64() & !0xf000 | 0x4000;
        let lo = self.next_u64() & !(0xc << 60) | (0x8 << 60);
        out.extend_from_slice(&uuid_text(hi, lo));
    }
}

/// The 8-4-4-4-12 lower-case hex text of the 128-bit value `hi:lo`.
fn uuid_text(hi: u64, lo: u64) -> [u8; 36] {
    let h = [
        hex8((hi >> 32) as u32),
        hex8(hi as u32),
        hex8((lo >> 32) as u32),
        hex8(lo as u32),
    ];
    let mut text = [b'-'; 36];
    text[0..8].copy_from_slice(&h[0]);
    text[9..13].copy_from_slice(&h[1][..4]);
    text[14..18].copy_from_slice(&h[1][4..]);
    text[19..23].copy_from_slice(&h[2][..4]);
    text[24..28].copy_from_slice(&h[2][4..]);
    text[28..36].copy_from_slice(&h[3]);
    text
}

/// Eight hex digits of `x`, computed in one word: each nibble spread into its own
/// byte, then '0' added, and 'a' - '0' - 10 more where the nibble is 10 or more.
fn hex8(x: u32) -> [u8; 8] {
    let mut v = u64::from(x);
    v = (v | v << 16) & 0x0000_ffff_0000_ffff;
    v = (v | v << 8) & 0x00ff_00ff_00ff_00ff;
    v = (v | v << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64).to_be_bytes()
}

fn seed(id: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(id);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Where a core is in its life: serving, draining (no new connections, idle ones
/// closed, responses say `Connection: close`), or stopped (every connection task
/// must end now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Phase {
    #[default]
    Running,
    Draining,
    Stopped,
}

/// Connection accounting, and the signals that reach every task of one core: the
/// phase, and nudges (a reload that removed a listener: its idle connections must
/// look at it). Tasks wait in one waker slab; every phase change or nudge empties
/// it and wakes them all, and those still waiting put their waker back.
#[derive(Default)]
pub struct Lifecycle {
    phase: Cell<Phase>,
    /// Counts phase changes and nudges: a task whose waker went into the slab in
    /// the current generation knows it is still there.
    generation: Cell<u32>,
    active: Cell<usize>,
    waiters: RefCell<WakerSlab>,
    all_closed: RefCell<Option<Waker>>,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.phase.get() >= Phase::Draining
    }

    pub fn is_stopped(&self) -> bool {
        self.phase.get() >= Phase::Stopped
    }

    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// Marks the core as draining and wakes everything waiting for it.
    pub fn start_drain(&self) {
        self.advance(Phase::Draining);
    }

    /// Ends every connection task (their sockets close as their futures drop).
    pub fn stop(&self) {
        self.advance(Phase::Stopped);
    }

    fn advance(&self, phase: Phase) {
        if self.phase.get() >= phase {
            return;
        }
        self.phase.set(phase);
        self.nudge();
    }

    /// Wakes every waiting task, so that each looks again at what it waits for.
    pub fn nudge(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers: smallvec::SmallVec<[Waker; 16]> = self
            .waiters
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once `done` holds; `done` is asked again at every phase change and
    /// nudge (and whenever the waiting task is polled).
    pub fn wait<F: Fn() -> bool>(&self, done: F) -> Wait<'_, F> {
        Wait {
            lifecycle: self,
            done,
            key: NO_KEY,
        }
    }

    /// Counts one more active connection (its task's guard calls `leave`).
    fn enter(&self) {
        self.active.set(self.active.get() + 1);
    }

    /// Ends the count of one connection.
    fn leave(&self) {
        let n = self.active.get() - 1;
        self.active.set(n);
        if n == 0 {
            if let Some(w) = self.all_closed.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Resolves when no connection is active.
    pub fn all_closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.active.get() == 0 {
                Poll::Ready(())
            } else {
                *self.all_closed.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Waker slots reused across waits, so waiting allocates nothing after warm-up.
#[derive(Default)]
struct WakerSlab {
    slots: Vec<Option<Waker>>,
    free: Vec<u32>,
}

/// A waiter that has no slot yet.
const NO_KEY: u32 = u32::MAX;

/// Waits until a condition on the core's state holds (see [`Lifecycle::wait`]).
/// The waker lives in the slab only.
pub struct Wait<'a, F> {
    lifecycle: &'a Lifecycle,
    done: F,
    key: u32,
}

// Nothing is pinned structurally: the fields are a reference, a closure that is
// only called, and a number.
impl<F> Unpin for Wait<'_, F> {}

impl<F: Fn() -> bool> Future for Wait<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = Pin::into_inner(self);
        if (this.done)() {
            return Poll::Ready(());
        }
        this.lifecycle.register(&mut this.key, cx);
        Poll::Pending
    }
}

impl<F> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        self.lifecycle.forget(self.key);
    }
}

impl Lifecycle {
    /// Keeps `cx`'s waker in the slab under `key` (taking a slot when `key` is
    /// NO_KEY) until the next phase change or nudge.
    fn register(&self, key: &mut u32, cx: &mut Context<'_>) {
        let mut slab = self.waiters.borrow_mut();
        if *key != NO_KEY {
            let slot = &mut slab.slots[*key as usize];
            match slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
            return;
        }
        let waker = Some(cx.waker().clone());
        *key = match slab.free.pop() {
            Some(k) => {
                slab.slots[k as usize] = waker;
                k
            }
            None => {
                slab.slots.push(waker);
                (slab.slots.len() - 1) as u32
            }
        };
    }

    /// Whether the slot `key` holds a waker that wakes like `waker`.
    fn holds(&self, key: u32, waker: &Waker) -> bool {
        self.waiters.borrow().slots[key as usize]
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
    }

    /// Frees a waiter's slot.
    fn forget(&self, key: u32) {
        if key != NO_KEY {
            let mut slab = self.waiters.borrow_mut();
            slab.slots[key as usize] = None;
            slab.free.push(key);
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's task: counted as active while it lives, and running its
    /// future until that ends or the core stops, whichever comes first (a stop drops
    /// the future, closing its sockets). Its waker stays in the core's slab, so a
    /// drain or a nudge polls the connection's future: an idle connection then sees
    /// that its listener is closing and ends. One small future instead of a
    /// `select!` over the connection's future and a [`Wait`], which would keep the
    /// connection's captures twice.
    pub struct ConnTask<F> {
        #[pin]
        fut: F,
        stop: TaskGuard,
    }
}

struct TaskGuard {
    worker: Rc<Worker>,
    key: u32,
    /// The lifecycle's generation when the waker was last put in the slab under
    /// `key`: while it is unchanged, the slot still holds it (only a phase change
    /// or a nudge empties slots), so a poll need not look.
    registered_in: u32,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.worker.lifecycle.forget(self.key);
        self.worker.lifecycle.leave();
        self.worker.metrics.connections_active.dec();
    }
}

/// The task of a connection of `worker`'s core (see [`ConnTask`]).
pub fn conn_task<F: Future<Output = ()>>(worker: Rc<Worker>, fut: F) -> ConnTask<F> {
    worker.lifecycle.enter();
    worker.metrics.connections_active.inc();
    ConnTask {
        fut,
        stop: TaskGuard {
            worker,
            key: NO_KEY,
            registered_in: 0,
        },
    }
}

impl<F: Future<Output = ()>> Future for ConnTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // The connection first: a response that completes as the core stops still
        // ends its future normally.
        if this.fut.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let stop = this.stop;
        let lifecycle = &stop.worker.lifecycle;
        if lifecycle.phase.get() >= Phase::Stopped {
            return Poll::Ready(());
        }
        let generation = lifecycle.generation.get();
        // Polled on every wake-up of the connection: the usual case is a waker
        // already in the slab since a generation that has not changed. The waker
        // cannot have changed either: this is the root future of its task
        // (`conn_task` is only spawned), and a task's waker is always its own.
        if stop.key != NO_KEY && generation == stop.registered_in {
            debug_assert!(lifecycle.holds(stop.key, cx.waker()));
            return Poll::Pending;
        }
        stop.registered_in = generation;
        lifecycle.register(&mut stop.key, cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::tests::Count;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn drain_wakes_waiters_and_slots_are_reused() {
        let lc = Lifecycle::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            let mut w = Box::pin(lc.wait(|| lc.is_draining()));
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            lc.waiters.borrow().slots.len(),
            1,
            "dropped waits free their slot"
        );
        let mut a = Box::pin(lc.wait(|| lc.is_draining()));
        let mut b = Box::pin(lc.wait(|| lc.is_draining()));
        let mut stop = Box::pin(lc.wait(|| lc.phase.get() >= Phase::Stopped));
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert!(stop.as_mut().poll(&mut cx).is_pending());
        assert!(
            stop.as_mut().poll(&mut cx).is_pending(),
            "polled again, same waker"
        );
        lc.start_drain();
        assert_eq!(count.0.load(Ordering::SeqCst), 3, "every waiter is woken");
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        // Woken by the drain, the wait for the stop registers again (same waker).
        assert!(stop.as_mut().poll(&mut cx).is_pending());
        lc.stop();
        assert_eq!(count.0.load(Ordering::SeqCst), 4, "the stop wakes it");
        assert!(stop.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_nudge_wakes_every_waiter_to_look_again() {
        let lc = Lifecycle::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let flag = Cell::new(false);
        let mut w = Box::pin(lc.wait(|| flag.get()));
        assert!(w.as_mut().poll(&mut cx).is_pending());
        lc.nudge();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(w.as_mut().poll(&mut cx).is_pending(), "still not done");
        flag.set(true);
        lc.nudge();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "registered again");
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn all_closed_resolves_when_the_last_connection_leaves() {
        let lc = Lifecycle::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        lc.enter();
        lc.enter();
        let mut closed = Box::pin(lc.all_closed());
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        lc.leave();
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        lc.leave();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(closed.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn uuid_text_is_the_hex_of_the_value() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = vec![
            (0, 0),
            (u64::MAX, u64::MAX),
            (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
        ];
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            values.push((x, x.rotate_left(17) ^ 0x5555));
        }
        for (hi, lo) in values {
            let hex = format!("{hi:016x}{lo:016x}");
            let want = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            assert_eq!(std::str::from_utf8(&uuid_text(hi, lo)).unwrap(), want);
        }
    }

    #[test]
    fn request_ids_are_uuid_v4_shaped_and_distinct() {
        let config = crate::config::Config::default_embedded();
        let slots = [ListenerSlot { id: 0, port: 8080 }];
        let w = Worker::new(0, &config, &slots, Default::default(), None);
        let mut a = Vec::new();
        let mut b = Vec::new();
        w.write_request_id(&mut a);
        w.write_request_id(&mut b);
        let a = String::from_utf8(a).unwrap();
        assert_eq!(a.len(), 36);
        for (i, c) in a.chars().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{a}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{a}");
            }
        }
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(a.as_bytes(), &b[..]);
    }
}
