//! A fast non-cryptographic random source for picks, jitter and probes:
//! xorshift64* per thread, seeded from the standard library's hasher keys.

use std::cell::Cell;

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0u8) | 1
    });
}

/// A fast non-cryptographic random number (xorshift64*, per thread).
pub fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A random fraction in `[0, 1)`.
pub fn random_fraction() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}
