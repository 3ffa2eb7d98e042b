//! Log-linear histogram of microsecond latencies (HdrHistogram's layout,
//! without the dependency): values below 128 are exact, above that each
//! power of two is split into 64 buckets, so a reported value is within
//! 1/64 (1.6 %) of the true one.

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS; // buckets per power of two
const EXACT: u64 = 2 * SUB as u64; // values below this get a bucket each
const BUCKETS: usize = EXACT as usize + (63 - SUB_BITS as usize) * SUB;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let sub = (v >> (exp - SUB_BITS)) as usize & (SUB - 1);
    EXACT as usize + (exp - SUB_BITS - 1) as usize * SUB + sub
}

/// Highest value that falls into bucket `i` (reports err on the high side).
fn upper(i: usize) -> u64 {
    if (i as u64) < EXACT {
        return i as u64;
    }
    let j = i - EXACT as usize;
    let exp = (j / SUB) as u32 + SUB_BITS + 1;
    let sub = (j % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    ((SUB as u64 + sub) << (exp - SUB_BITS)).saturating_add(width - 1)
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Value at quantile `q` (0..=1): the smallest bucket bound with at
    /// least `q` of the samples at or below it; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..EXACT {
            assert_eq!(upper(index(v)), v);
        }
    }

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in [128u64, 129, 1000, 4095, 4096, 65_537, 2_000_000, 1 << 40, u64::MAX] {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last, "index not monotone at {v}");
            last = i;
            let up = upper(i);
            assert!(up >= v, "{v} above its bucket bound {up}");
            assert!((up - v) as f64 <= v as f64 / SUB as f64, "{v} -> {up} too coarse");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile(0.5);
        assert!((500..=508).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99);
        assert!((990..=1000).contains(&p99), "p99 {p99}");
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.quantile(0.0), 1);
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(10);
        b.record(20_000);
        b.record(20_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 20_000);
        assert_eq!(a.quantile(0.3), 10);
        assert!(a.quantile(0.9) >= 20_000);
    }
}
