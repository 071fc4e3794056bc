//! Per-core pool of byte buffers for io_uring reads and writes. io_uring ops own
//! their buffer while in flight, so buffers move into an op and come back with its
//! result; between requests they return here instead of to the allocator, which
//! keeps the request path free of heap allocation after warm-up.
//!
//! The pool follows the load down as well as up: buffers that sat unused through a
//! whole sweep period (the low-water mark of the free list) are handed back, down to
//! a floor, and the allocator is asked to return its free pages to the kernel. A
//! traffic spike thus costs memory while it lasts, not for the life of the process
//! (HAProxy trims its pools the same way).

use std::cell::{Cell, RefCell};

pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    capacity: usize,
    keep: usize,
    floor: usize,
    /// Fewest free buffers since the last sweep.
    low: Cell<usize>,
}

/// Freed bytes below which a sweep does not trim the allocator (a trim walks the
/// allocator's free lists: not worth it for a few buffers).
const TRIM_AT: usize = 256 * 1024;

impl BufPool {
    /// `capacity`: size of each buffer; `keep`: most buffers held while unused;
    /// `floor`: buffers a sweep leaves in the pool however idle it is.
    pub fn new(capacity: usize, keep: usize, floor: usize) -> BufPool {
        BufPool {
            free: RefCell::new(Vec::with_capacity(keep)),
            capacity,
            keep,
            floor,
            low: Cell::new(0),
        }
    }

    /// An empty buffer with at least the pool's capacity.
    pub fn take(&self) -> Vec<u8> {
        let mut free = self.free.borrow_mut();
        match free.pop() {
            Some(buf) => {
                if free.len() < self.low.get() {
                    self.low.set(free.len());
                }
                buf
            }
            None => {
                self.low.set(0);
                Vec::with_capacity(self.capacity)
            }
        }
    }

    /// Frees the buffers that stayed unused since the last sweep (the oldest ones;
    /// the floor stays), trims the allocator when that was worth it, and starts the
    /// next period. Returns how many buffers were freed.
    pub fn sweep(&self) -> usize {
        let mut free = self.free.borrow_mut();
        let n = self.low.get().min(free.len().saturating_sub(self.floor));
        let bytes: usize = free.drain(..n).map(|b| b.capacity()).sum();
        self.low.set(free.len());
        drop(free);
        if bytes >= TRIM_AT {
            trim_allocator();
        }
        n
    }

    /// Returns a buffer; odd-sized or surplus ones are freed.
    pub fn give(&self, mut buf: Vec<u8>) {
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep
            && buf.capacity() >= self.capacity
            && buf.capacity() <= 4 * self.capacity
        {
            buf.clear();
            free.push(buf);
        }
    }

    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }
}

/// Sets the C allocator to map allocations of `bytes` and more on their own pages
/// (once per process). Pooled I/O buffers then never sit among small long-lived
/// allocations (connection state) in the heap, where a freed buffer's pages stay
/// resident as long as a neighbour lives: a traffic spike's buffers go back to the
/// kernel when freed. A mapped buffer also costs only the pages a read touched. The
/// cost, a system call per allocation and per free of such a buffer, is paid on pool
/// misses only.
#[allow(unsafe_code)]
pub fn map_large_allocations(bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes a tuning parameter of the allocator.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
        });
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// Asks the C allocator to return the free pages of its heaps to the kernel (freed
/// memory otherwise stays resident until reused).
#[allow(unsafe_code)]
fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases pages of free chunks; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_up_to_keep() {
        let pool = BufPool::new(1024, 1, 0);
        let mut a = pool.take();
        a.extend_from_slice(b"abc");
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        assert!(b.is_empty());
        pool.give(b);
        pool.give(Vec::with_capacity(1024));
        assert_eq!(pool.idle(), 1, "surplus is freed");
        pool.give(Vec::with_capacity(8));
        assert_eq!(pool.idle(), 1, "small buffers are not kept");
    }

    #[test]
    fn sweeps_free_what_stayed_idle_down_to_the_floor() {
        let pool = BufPool::new(1024, 16, 2);
        let bufs: Vec<_> = (0..10).map(|_| pool.take()).collect();
        for b in bufs {
            pool.give(b);
        }
        assert_eq!(pool.sweep(), 0, "all ten were in use during the period");
        // Four in use at the busiest moment of the next period: six stayed idle.
        let four: Vec<_> = (0..4).map(|_| pool.take()).collect();
        for b in four {
            pool.give(b);
        }
        assert_eq!(pool.sweep(), 6);
        assert_eq!(pool.idle(), 4);
        // A period without any take leaves the floor.
        assert_eq!(pool.sweep(), 2);
        assert_eq!(pool.idle(), 2);
        assert_eq!(pool.sweep(), 0);
        // A pool that ran dry keeps what comes back.
        let three: Vec<_> = (0..3).map(|_| pool.take()).collect();
        for b in three {
            pool.give(b);
        }
        assert_eq!(pool.sweep(), 0);
        assert_eq!(pool.idle(), 3);
    }
}
