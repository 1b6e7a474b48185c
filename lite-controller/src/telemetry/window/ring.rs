//! The hour of points a target keeps, packed: each point is a record of
//! LEB128 varints in one byte queue per ring (31 bytes for a busy proxy's
//! [`Point`] instead of 168, 8 for an [`EdgePoint`] instead of 40, 7 for
//! an [`AuthzPoint`] instead of 32), read
//! back whole when a window sums it. Lossless: every field round-trips;
//! latency buckets are stored only when non-zero.

use super::point::{AuthzPoint, EdgePoint, Point, RETENTION_MS};
use std::collections::VecDeque;
use std::marker::PhantomData;

/// A point a [`Ring`] can keep as bytes: its times, and the rest packed.
pub trait Timed: Sized {
    /// When it was taken, Unix milliseconds.
    fn at_ms(&self) -> u64;
    /// The milliseconds it covers.
    fn dt_ms(&self) -> u64;
    /// Appends everything but the two times to `out`, as varints.
    fn pack(&self, out: &mut Vec<u8>);
    /// The point at `at_ms` covering `dt_ms` from what [`Timed::pack`]
    /// wrote; `None` when the bytes end early or a value does not fit its
    /// field.
    fn unpack(at_ms: u64, dt_ms: u64, r: &mut Reader<impl Iterator<Item = u8>>) -> Option<Self>;
}

/// Points of the last [`RETENTION_MS`], oldest first, at most `cap`.
///
/// A record is the gap `zigzag(at_ms − the previous point's at_ms)`,
/// `zigzag(dt_ms − gap)`, the body's length and the body ([`Timed::pack`]),
/// all LEB128 varints: a 10 s gap takes 3 bytes and the `dt_ms` of
/// consecutive scrapes (the gap) 1, and a window skips the records outside
/// it without reading their bodies. Wrapping arithmetic: any times
/// round-trip, a clock that steps back too.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    /// The records, oldest first.
    bytes: VecDeque<u8>,
    /// Points kept (for the cap).
    len: usize,
    /// The time the first record's gap counts from (the point before it).
    base_ms: u64,
    /// The newest point's time and where its record starts in `bytes`:
    /// [`Ring::last`] without reading every record.
    last: (u64, usize),
    _points: PhantomData<fn() -> T>,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring {
            bytes: VecDeque::new(),
            len: 0,
            base_ms: 0,
            last: (0, 0),
            _points: PhantomData,
        }
    }
}

impl<T: Timed> Ring<T> {
    /// Appends `p`, dropping points older than the retention and over `cap`.
    pub fn push(&mut self, p: T, cap: usize) {
        let horizon = p.at_ms().saturating_sub(RETENTION_MS);
        while self
            .front_ms()
            .is_some_and(|at| at <= horizon || self.len >= cap)
        {
            self.pop_front();
        }
        let prev_ms = if self.len == 0 {
            self.base_ms = p.at_ms();
            p.at_ms()
        } else {
            self.last.0
        };
        let mut body = Vec::with_capacity(64);
        p.pack(&mut body);
        let start = self.bytes.len();
        let gap = p.at_ms().wrapping_sub(prev_ms);
        put(&mut self.bytes, zigzag(gap as i64));
        put(&mut self.bytes, zigzag(p.dt_ms().wrapping_sub(gap) as i64));
        put(&mut self.bytes, body.len() as u64);
        self.bytes.extend(body);
        self.len += 1;
        self.last = (p.at_ms(), start);
    }

    /// Points with `from_ms < at_ms <= to_ms`, oldest first.
    pub fn between(&self, from_ms: u64, to_ms: u64) -> impl Iterator<Item = T> + '_ {
        let mut r = Reader::new(self.bytes.iter().copied());
        let mut at = self.base_ms;
        std::iter::from_fn(move || loop {
            let (gap, dt, len) = r.header()?;
            at = at.wrapping_add(gap);
            if at > from_ms && at <= to_ms {
                let mut body = Reader::new(r.bytes.by_ref().take(len));
                let p = T::unpack(at, dt, &mut body);
                // What the body did not read (none, as packed) is skipped.
                body.bytes.for_each(drop);
                return p;
            }
            r.skip(len)?;
        })
    }

    /// The newest point.
    pub fn last(&self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let (at, start) = self.last;
        let mut r = Reader::new(self.bytes.range(start..).copied());
        let (_, dt, _) = r.header()?;
        T::unpack(at, dt, &mut r)
    }

    /// Whether no point is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops points at or before `horizon_ms`.
    pub fn expire(&mut self, horizon_ms: u64) {
        while self.front_ms().is_some_and(|at| at <= horizon_ms) {
            self.pop_front();
        }
    }

    /// The oldest point's time.
    fn front_ms(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let (gap, _, _) = Reader::new(self.bytes.iter().copied()).header()?;
        Some(self.base_ms.wrapping_add(gap))
    }

    /// Drops the oldest point (all of them if its record cannot be read,
    /// which packing never writes).
    fn pop_front(&mut self) {
        let mut r = Reader::new(self.bytes.iter().copied());
        let read = r.header().and_then(|(gap, _, len)| {
            r.skip(len)?;
            Some((gap, r.read))
        });
        match read {
            Some((gap, n)) if self.len > 1 && self.last.1 >= n => {
                self.base_ms = self.base_ms.wrapping_add(gap);
                self.bytes.drain(..n);
                self.len -= 1;
                self.last.1 -= n;
            }
            _ => *self = Ring::default(),
        }
    }
}

/// LEB128 varints from bytes.
pub struct Reader<I> {
    bytes: I,
    /// Bytes read so far.
    read: usize,
}

impl<I: Iterator<Item = u8>> Reader<I> {
    fn new(bytes: I) -> Self {
        Reader { bytes, read: 0 }
    }

    /// The next varint; `None` at the end or past 64 bits.
    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bytes.next()?;
            self.read += 1;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A record's gap, `dt_ms` and body length.
    fn header(&mut self) -> Option<(u64, u64, usize)> {
        let gap = unzigzag(self.varint()?) as u64;
        let dt = gap.wrapping_add(unzigzag(self.varint()?) as u64);
        let len = usize::try_from(self.varint()?).ok()?;
        Some((gap, dt, len))
    }

    /// Skips `n` bytes; `None` if fewer are left.
    fn skip(&mut self, n: usize) -> Option<()> {
        if n > 0 {
            self.bytes.nth(n - 1)?;
            self.read += n;
        }
        Some(())
    }
}

/// Appends `v` as a LEB128 varint (1 byte below 128, at most 10).
fn put(out: &mut impl Extend<u8>, mut v: u64) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = b;
            n += 1;
            break;
        }
        buf[n] = b | 0x80;
        n += 1;
    }
    out.extend(buf[..n].iter().copied());
}

/// Signed → unsigned with small magnitudes small (protobuf's zigzag): a
/// clock that steps back gives a negative gap, a late scrape a `dt_ms`
/// below it.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl Timed for Point {
    fn at_ms(&self) -> u64 {
        self.at_ms
    }

    fn dt_ms(&self) -> u64 {
        self.dt_ms
    }

    /// The counts, `tcp_open`, the bytes, a bit mask of the non-zero
    /// buckets, then those buckets' counts.
    fn pack(&self, out: &mut Vec<u8>) {
        for v in [
            self.requests,
            self.successes,
            self.failures,
            self.tcp_open,
            self.read_bytes,
            self.write_bytes,
        ] {
            put(out, v);
        }
        let mask = self
            .buckets
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .fold(0u64, |m, (i, _)| m | (1 << i));
        put(out, mask);
        for &c in self.buckets.iter().filter(|&&c| c > 0) {
            put(out, u64::from(c));
        }
    }

    fn unpack(at_ms: u64, dt_ms: u64, r: &mut Reader<impl Iterator<Item = u8>>) -> Option<Point> {
        let mut p = Point {
            at_ms,
            dt_ms,
            requests: r.varint()?,
            successes: r.varint()?,
            failures: r.varint()?,
            tcp_open: r.varint()?,
            read_bytes: r.varint()?,
            write_bytes: r.varint()?,
            ..Point::default()
        };
        let mask = r.varint()?;
        for (i, c) in p.buckets.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *c = u32::try_from(r.varint()?).ok()?;
            }
        }
        Some(p)
    }
}

impl Timed for EdgePoint {
    fn at_ms(&self) -> u64 {
        self.at_ms
    }

    fn dt_ms(&self) -> u64 {
        self.dt_ms
    }

    /// Requests, successes, failures.
    fn pack(&self, out: &mut Vec<u8>) {
        for v in [self.requests, self.successes, self.failures] {
            put(out, v);
        }
    }

    fn unpack(
        at_ms: u64,
        dt_ms: u64,
        r: &mut Reader<impl Iterator<Item = u8>>,
    ) -> Option<EdgePoint> {
        Some(EdgePoint {
            at_ms,
            dt_ms,
            requests: r.varint()?,
            successes: r.varint()?,
            failures: r.varint()?,
        })
    }
}

impl Timed for AuthzPoint {
    fn at_ms(&self) -> u64 {
        self.at_ms
    }

    fn dt_ms(&self) -> u64 {
        self.dt_ms
    }

    /// Allowed, denied.
    fn pack(&self, out: &mut Vec<u8>) {
        put(out, self.allowed);
        put(out, self.denied);
    }

    fn unpack(
        at_ms: u64,
        dt_ms: u64,
        r: &mut Reader<impl Iterator<Item = u8>>,
    ) -> Option<AuthzPoint> {
        Some(AuthzPoint {
            at_ms,
            dt_ms,
            allowed: r.varint()?,
            denied: r.varint()?,
        })
    }
}

#[cfg(test)]
mod tests;
