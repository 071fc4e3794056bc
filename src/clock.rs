//! Per-core cached clock: the IMF-fixdate for Date headers (RFC 9110 §5.6.7),
//! formatted at most once per second per core.

use std::cell::{Cell, RefCell};
use std::time::{SystemTime, UNIX_EPOCH};

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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
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
mod tests {
    use super::*;

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
