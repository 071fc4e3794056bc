//! Per-core pool of byte buffers for io_uring reads and writes. io_uring ops own
//! their buffer while in flight, so buffers move into an op and come back with its
//! result; between requests they return here instead of to the allocator, which
//! keeps the request path free of heap allocation after warm-up.

use std::cell::RefCell;

pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    capacity: usize,
    keep: usize,
}

impl BufPool {
    /// `capacity`: size of each buffer; `keep`: most buffers held while unused.
    pub fn new(capacity: usize, keep: usize) -> BufPool {
        BufPool {
            free: RefCell::new(Vec::with_capacity(keep)),
            capacity,
            keep,
        }
    }

    /// An empty buffer with at least the pool's capacity.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_up_to_keep() {
        let pool = BufPool::new(1024, 1);
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
}
