//! Per-core clock: [`Moment`], the coarse clock every timeout is measured on; the
//! IMF-fixdate for Date headers (RFC 9110 §5.6.7), formatted at most once per second
//! per core; and [`Deadlines`], the per-core queue behind every socket timeout
//! (`relay::Timer` drives it).

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Add;
use std::task::Waker;
use std::time::{Duration, Instant};

/// A time on the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`), in
/// milliseconds. Timeouts only: it advances once per kernel tick (1 to 10 ms), so a
/// deadline taken from it may pass up to a tick early or late, as with nginx's
/// cached time. Reading it costs a few loads in the vDSO, against a TSC read and a
/// conversion for `Instant::now()` (which took about 260 instructions of every
/// request at 7 reads each), and a deadline is one u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

impl Moment {
    pub fn now() -> Moment {
        Moment(coarse_ms(libc::CLOCK_MONOTONIC_COARSE))
    }

    /// How long after `earlier` this is; zero if it is not later.
    pub fn saturating_duration_since(self, earlier: Moment) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    pub fn checked_sub(self, d: Duration) -> Option<Moment> {
        self.0.checked_sub(ms_ceil(d)).map(Moment)
    }

    /// The same time on `Instant`'s clock (for monoio's timer wheel).
    pub fn to_instant(self) -> Instant {
        let (now, instant) = (Moment::now(), Instant::now());
        match self.0.checked_sub(now.0) {
            Some(ahead) => instant + Duration::from_millis(ahead),
            None => instant,
        }
    }
}

impl Add<Duration> for Moment {
    type Output = Moment;

    /// Rounded up to a whole millisecond: never earlier than asked.
    fn add(self, d: Duration) -> Moment {
        Moment(self.0.saturating_add(ms_ceil(d)))
    }
}

fn ms_ceil(d: Duration) -> u64 {
    let ms = d.as_secs().saturating_mul(1000);
    ms.saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)))
}

/// Milliseconds on a coarse clock (whole seconds are exact).
fn coarse_ms(clock: libc::clockid_t) -> u64 {
    let ts = read_clock(clock);
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

#[allow(unsafe_code)]
fn read_clock(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration. The clocks
    // used exist on every Linux since 2.6.32; were the call to fail, `ts` stays zero
    // (tested in `coarse_clocks_read_and_advance`).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

/// A precise point in time (CLOCK_MONOTONIC, nanoseconds) for measuring requests:
/// the vDSO read without `Instant`'s conversions (its `elapsed` cost about 40
/// instructions more per reading, measured with callgrind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Stamp {
    /// A placeholder before anything is measured.
    pub const ZERO: Stamp = Stamp(0);

    #[inline]
    pub fn now() -> Stamp {
        let ts = read_clock(libc::CLOCK_MONOTONIC);
        Stamp((ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// Nanoseconds from `earlier` to this (zero if not later).
    #[inline]
    pub fn nanos_since(self, earlier: Stamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// This plus `ns` nanoseconds.
    #[inline]
    pub fn plus(self, ns: u64) -> Stamp {
        Stamp(self.0.saturating_add(ns))
    }

    /// This minus `ns` nanoseconds (zero at most).
    #[inline]
    pub fn minus(self, ns: u64) -> Stamp {
        Stamp(self.0.saturating_sub(ns))
    }

    /// Now, and the wall clock now (nanoseconds since the Unix epoch).
    pub fn with_wall() -> (Stamp, u64) {
        let ts = read_clock(libc::CLOCK_REALTIME);
        // (A clock set before 1970 reads as 1970.)
        let wall_ns = (ts.tv_sec.max(0) as u64) * 1_000_000_000 + ts.tv_nsec as u64;
        (Stamp::now(), wall_ns)
    }
}

/// The timeouts of one core's sockets: a slot per socket (a deadline, the time of its
/// heap entry, two flags and a waker: 56 bytes) and one min-heap of (time, slot)
/// entries. An idle connection keeps its slot: with a monoio `Sleep` each (640 bytes,
/// cache-padded for threads it never meets) a timer for each of 10,000 idle
/// connections would cost more than the connections.
///
/// Deadlines move on every read and write, almost always later. Moving one later is
/// a store: the slot's heap entry stays where it is, and when it comes due the slot's
/// real deadline is looked at and the entry filed again (at most once per timeout
/// period). Only a move to an *earlier* time than the queued one pushes an entry;
/// the old one goes stale (a slot has one valid entry: the one whose time equals
/// its `queued`), and stale entries are dropped when they surface.
#[derive(Default)]
pub struct Deadlines {
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(Moment, u32)>>,
}

#[derive(Default)]
struct Slot {
    /// When the last armed operation times out (None before the first).
    deadline: Option<Moment>,
    /// Time of this slot's valid heap entry.
    queued: Option<Moment>,
    waker: Option<Waker>,
    /// An operation is armed: `deadline` fires.
    armed: bool,
    fired: bool,
}

impl Deadlines {
    pub fn add(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Frees a slot; its heap entries go stale.
    pub fn remove(&mut self, i: u32) {
        self.slots[i as usize] = Slot::default();
        self.free.push(i);
    }

    /// Arms slot `i` to fire at `deadline`. True when that pushed a heap entry
    /// (the deadline is earlier than anything queued for the slot), so that whoever
    /// sleeps until the earliest entry may need waking.
    pub fn arm(&mut self, i: u32, deadline: Moment) -> bool {
        let slot = &mut self.slots[i as usize];
        slot.deadline = Some(deadline);
        slot.armed = true;
        slot.fired = false;
        if slot.queued.is_some_and(|q| q <= deadline) {
            return false;
        }
        slot.queued = Some(deadline);
        self.heap.push(Reverse((deadline, i)));
        true
    }

    /// The armed operation completed: nothing fires for it.
    pub fn disarm(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        slot.armed = false;
        slot.fired = false;
    }

    /// The deadline slot `i` was last armed with, if it ever was.
    pub fn last(&self, i: u32) -> Option<Moment> {
        self.slots[i as usize].deadline
    }

    /// Whether slot `i`'s deadline has passed; if not, `waker` is woken when it does.
    pub fn check(&mut self, i: u32, waker: &Waker) -> bool {
        let slot = &mut self.slots[i as usize];
        if !slot.fired {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
        slot.fired
    }

    /// Fires every armed slot whose deadline is at or before `now`, handing each
    /// one's waker to `wake`.
    pub fn expire(&mut self, now: Moment, mut wake: impl FnMut(Waker)) {
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let slot = &mut self.slots[i as usize];
            if slot.queued != Some(at) {
                continue; // stale
            }
            slot.queued = None;
            let Some(deadline) = slot.deadline.filter(|_| slot.armed) else {
                continue;
            };
            if deadline <= now {
                slot.fired = true;
                slot.armed = false;
                if let Some(w) = slot.waker.take() {
                    wake(w);
                }
            } else {
                // Moved later since it was queued: file it again.
                slot.queued = Some(deadline);
                self.heap.push(Reverse((deadline, i)));
            }
        }
    }

    /// The earliest queued time (stale entries at the top are dropped first).
    pub fn earliest(&mut self) -> Option<Moment> {
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if self.slots[i as usize].queued == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Heap entries, stale ones included (for tests and leak checks).
    pub fn queued(&self) -> usize {
        self.heap.len()
    }
}

pub struct DateCache {
    second: Cell<u64>,
    text: RefCell<[u8; 29]>,
}

impl DateCache {
    pub fn new() -> DateCache {
        DateCache {
            second: Cell::new(u64::MAX),
            text: RefCell::new([b' '; 29]),
        }
    }

    /// Calls `f` with the current date line value, e.g. "Sun, 06 Nov 1994 08:49:37 GMT".
    pub fn with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        // The coarse wall clock: whole seconds are all a Date holds.
        let now = coarse_ms(libc::CLOCK_REALTIME_COARSE) / 1000;
        if now != self.second.get() {
            self.second.set(now);
            format_imf_fixdate(now, &mut self.text.borrow_mut());
        }
        f(&*self.text.borrow())
    }
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache::new()
    }
}

/// Formats seconds since the Unix epoch as IMF-fixdate into `out`.
pub fn format_imf_fixdate(secs: u64, out: &mut [u8; 29]) {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let two = |n: u64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    out[0..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    out[5..7].copy_from_slice(&two(day as u64));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    let y = year as u64;
    out[12..14].copy_from_slice(&two(y / 100));
    out[14..16].copy_from_slice(&two(y % 100));
    out[16] = b' ';
    out[17..19].copy_from_slice(&two(rem / 3600));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(rem / 60 % 60));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(rem % 60));
    out[25..29].copy_from_slice(b" GMT");
}

/// Seconds since the Unix epoch -> (year, month 1-12, day 1-31, hour, minute, second).
pub fn civil_time(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = (secs % 86_400) as u32;
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31); H. Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    /// A waker that counts its wake-ups (also used by the worker's tests).
    pub(crate) struct Count(pub AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn deadlines_fire_once_and_moves_later_cost_no_entry() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let t0 = Moment::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        let (a, b) = (d.add(), d.add());
        assert!(d.arm(a, ms(100)));
        assert!(d.arm(b, ms(50)));
        assert!(!d.check(a, &waker) && !d.check(b, &waker));
        // Later moves are stores only.
        for n in 101..200 {
            assert!(!d.arm(a, ms(n)));
        }
        assert_eq!(d.queued(), 2);
        assert_eq!(d.earliest(), Some(ms(50)));
        let mut woken = 0;
        d.expire(ms(60), |w| {
            woken += 1;
            w.wake()
        });
        assert_eq!(woken, 1);
        assert!(d.check(b, &waker), "b fired");
        assert!(!d.check(a, &waker));
        // a's entry at 100 comes due, finds 199 and is filed again.
        d.expire(ms(150), |_| panic!("a is not due"));
        assert_eq!(d.earliest(), Some(ms(199)));
        // An earlier deadline pushes an entry; the old one goes stale.
        assert!(d.arm(a, ms(160)));
        assert_eq!(d.earliest(), Some(ms(160)));
        d.disarm(a);
        assert_eq!(
            d.last(a),
            Some(ms(160)),
            "the last deadline outlives its operation"
        );
        d.expire(ms(300), |_| panic!("disarmed"));
        assert!(!d.check(a, &waker));
        assert_eq!(d.earliest(), None);
        assert_eq!(d.queued(), 0, "stale entries are dropped");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn removed_slots_are_reused_and_their_entries_go_stale() {
        let t0 = Moment::now();
        let mut d = Deadlines::default();
        let a = d.add();
        assert_eq!(d.last(a), None);
        d.arm(a, t0 + Duration::from_millis(10));
        d.remove(a);
        let b = d.add();
        assert_eq!(a, b, "slot reused");
        assert_eq!(d.last(b), None, "a reused slot starts afresh");
        assert_eq!(d.earliest(), None, "the freed slot's entry is stale");
        d.expire(t0 + Duration::from_secs(1), |_| panic!("nothing armed"));
    }

    #[test]
    fn coarse_clocks_read_and_advance() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let coarse = coarse_ms(libc::CLOCK_REALTIME_COARSE) / 1000;
        assert!(coarse.abs_diff(wall) <= 1, "wall clock {coarse} vs {wall}");
        let (m0, i0) = (Moment::now(), Instant::now());
        assert!(m0.0 > 0, "the monotonic clock reads");
        // It advances with real time (give it 5 s to pass 30 ms; ticks are <= 10 ms).
        let m1 = loop {
            let m = Moment::now();
            if m.saturating_duration_since(m0) >= Duration::from_millis(30)
                || i0.elapsed() > Duration::from_secs(5)
            {
                break m;
            }
            std::hint::spin_loop();
        };
        let fine = i0.elapsed();
        let coarse = m1.saturating_duration_since(m0);
        assert!(coarse >= Duration::from_millis(30), "advanced {coarse:?}");
        assert!(
            coarse <= fine + Duration::from_millis(20),
            "{coarse:?} vs {fine:?}"
        );
        // Arithmetic: adding rounds up to a millisecond, never early.
        assert_eq!(m0 + Duration::from_micros(1), Moment(m0.0 + 1));
        assert_eq!(m0 + Duration::from_millis(1500), Moment(m0.0 + 1500));
        assert_eq!(m0.checked_sub(Duration::from_millis(m0.0 + 1)), None);
        assert_eq!(m0.saturating_duration_since(m1), Duration::ZERO);
        let later = m0 + Duration::from_secs(3600);
        let on_wheel = later.to_instant();
        let ahead = on_wheel.saturating_duration_since(Instant::now());
        assert!(ahead > Duration::from_secs(3590) && ahead <= Duration::from_secs(3600));
        assert!(
            m0.to_instant() <= Instant::now(),
            "a past moment is due now"
        );
    }

    #[test]
    fn formats_known_dates() {
        let mut out = [0u8; 29];
        format_imf_fixdate(784_111_777, &mut out);
        assert_eq!(&out, b"Sun, 06 Nov 1994 08:49:37 GMT");
        format_imf_fixdate(0, &mut out);
        assert_eq!(&out, b"Thu, 01 Jan 1970 00:00:00 GMT");
        format_imf_fixdate(951_782_400, &mut out); // leap day
        assert_eq!(&out, b"Tue, 29 Feb 2000 00:00:00 GMT");
        format_imf_fixdate(4_102_444_799, &mut out);
        assert_eq!(&out, b"Thu, 31 Dec 2099 23:59:59 GMT");
    }
}
