//! A small seeded random number generator (xoshiro256**, seeded through SplitMix64).
//!
//! Written out here rather than taken from a crate so that one seed gives the same market on
//! every version of every dependency: the ground truth of a seed never changes under a
//! `cargo update`.

/// xoshiro256** (Blackman and Vigna): fast, 256 bits of state, good statistical quality.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`; `stream` separates independent sequences of one seed.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut st = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng {
            s: [
                splitmix64(&mut st),
                splitmix64(&mut st),
                splitmix64(&mut st),
                splitmix64(&mut st),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; `n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi]`.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Picks an index with probability proportional to `weights` (cumulative, ascending).
    pub fn weighted(&mut self, cumulative: &[f64]) -> usize {
        let total = cumulative.last().copied().unwrap_or(0.0);
        let x = self.unit() * total;
        cumulative
            .partition_point(|&c| c <= x)
            .min(cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_streams_differ() {
        let a: Vec<u64> = (0..8)
            .scan(Rng::new(7, 0), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .scan(Rng::new(7, 0), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..8)
            .scan(Rng::new(7, 1), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // pinned: a change of algorithm would silently change every seed's ground truth
        assert_eq!(Rng::new(0, 0).next_u64(), 0x99EC_5F36_CB75_F2B4);
    }

    #[test]
    fn ranges_and_means() {
        let mut r = Rng::new(1, 0);
        let n = 100_000;
        let mut hits = [0u32; 5];
        let mut sum = 0.0;
        for _ in 0..n {
            let v = r.between(-2, 2);
            hits[(v + 2) as usize] += 1;
            sum += r.exp(3.0);
            assert!(r.below(7) < 7);
        }
        for h in hits {
            assert!((h as f64 / n as f64 - 0.2).abs() < 0.01, "{hits:?}");
        }
        assert!((sum / n as f64 - 3.0).abs() < 0.1);
        let cum = [1.0, 1.0, 4.0];
        let mut counts = [0u32; 3];
        for _ in 0..n {
            counts[r.weighted(&cum)] += 1;
        }
        assert_eq!(counts[1], 0, "zero weight is never picked");
        assert!((counts[0] as f64 / n as f64 - 0.25).abs() < 0.01);
    }
}
