//! Small statistics over per-call figures: quantiles, and confidence intervals for the
//! difference between two groups of calls (the arms of a prompt experiment).
//!
//! - [`quantile`]: linear interpolation between order statistics (Hyndman and Fan's type 7,
//!   the default of R's `quantile` and numpy's `percentile`).
//! - [`welch_interval`]: the difference of two means with Welch's t-interval (unequal
//!   variances, Welch–Satterthwaite degrees of freedom; the t quantile from `statrs`).
//! - [`bootstrap_quantile_interval`]: the difference of two quantiles (say, greeting p95) with a
//!   percentile bootstrap: each group is resampled with replacement on its own, the quantile
//!   difference is taken for every resample, and the interval is the middle `level` share of
//!   those differences. The generator is seeded, so the same calls give the same interval.
//!
//! Every interval is of `b - a`: in experiments, variant minus control.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// Whether the interval leaves out 0: the difference is significant at its level.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// The `q` quantile (0 to 1) of `sorted` (ascending) by linear interpolation; `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * q.clamp(0.0, 1.0);
    let below = h.floor() as usize;
    let above = h.ceil() as usize;
    Some(sorted[below] + (h - below as f64) * (sorted[above] - sorted[below]))
}

/// The `q` quantile of `values` in any order (sorted here); `None` when empty. NaNs sort last.
pub fn quantile_unsorted(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, q)
}

/// The arithmetic mean; `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// The sample variance (divided by n − 1); `None` with fewer than 2 values.
pub fn sample_variance(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values)?;
    Some(values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64)
}

/// Welch's t-interval at confidence `level` (e.g. 0.95) for `mean(b) - mean(a)`; `None` unless
/// each group has at least 2 values. When both groups have no spread the interval is the
/// difference itself.
pub fn welch_interval(a: &[f64], b: &[f64], level: f64) -> Option<Interval> {
    let (va, vb) = (sample_variance(a)?, sample_variance(b)?);
    let diff = mean(b)? - mean(a)?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (sa, sb) = (va / na, vb / nb);
    let se = (sa + sb).sqrt();
    if se == 0.0 {
        return Some(Interval {
            low: diff,
            high: diff,
        });
    }
    let df = (sa + sb).powi(2) / (sa.powi(2) / (na - 1.0) + sb.powi(2) / (nb - 1.0));
    let t = StudentsT::new(0.0, 1.0, df)
        .ok()?
        .inverse_cdf(1.0 - (1.0 - level) / 2.0);
    Some(Interval {
        low: diff - t * se,
        high: diff + t * se,
    })
}

/// Percentile-bootstrap interval at confidence `level` for `quantile(b, q) - quantile(a, q)`,
/// from `resamples` resamples drawn with a generator seeded by `seed`; `None` unless each
/// group has at least 2 values and `resamples` is at least 10.
///
/// Each resample costs O(n) (counts per value, then a walk to the order statistics), so 2,000
/// resamples of 10,000 calls a group take some tens of milliseconds.
pub fn bootstrap_quantile_interval(
    a: &[f64],
    b: &[f64],
    q: f64,
    level: f64,
    resamples: usize,
    seed: u64,
) -> Option<Interval> {
    if a.len() < 2 || b.len() < 2 || resamples < 10 {
        return None;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts_a = vec![0u32; a.len()];
    let mut counts_b = vec![0u32; b.len()];
    let mut differences: Vec<f64> = (0..resamples)
        .map(|_| {
            let qa = resampled_quantile(&a, &mut counts_a, q, &mut rng);
            resampled_quantile(&b, &mut counts_b, q, &mut rng) - qa
        })
        .collect();
    differences.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some(Interval {
        low: quantile(&differences, tail)?,
        high: quantile(&differences, 1.0 - tail)?,
    })
}

/// The `q` quantile of one resample (with replacement) of `sorted`, using `counts` (one slot
/// per value) as scratch.
fn resampled_quantile(sorted: &[f64], counts: &mut [u32], q: f64, rng: &mut StdRng) -> f64 {
    let n = sorted.len();
    counts.fill(0);
    for _ in 0..n {
        counts[rng.random_range(0..n)] += 1;
    }
    // The resample, sorted, is each value repeated counts[i] times: read the two order
    // statistics type-7 interpolation needs by walking the counts.
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let (below, above) = (h.floor() as usize, h.ceil() as usize);
    let mut seen = 0usize;
    let mut low = None;
    let mut high = sorted[n - 1];
    for (value, &count) in sorted.iter().zip(counts.iter()) {
        seen += count as usize;
        if low.is_none() && seen > below {
            low = Some(*value);
        }
        if seen > above {
            high = *value;
            break;
        }
    }
    let low = low.unwrap_or(high);
    low + (h - below as f64) * (high - low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        // numpy.percentile([1, 2, 3, 4], 95) = 3.85
        assert!(close(quantile(&v, 0.95).unwrap(), 3.85, 1e-12));
        assert_eq!(quantile(&[7.0], 0.95), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile_unsorted(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
    }

    #[test]
    fn welch_matches_scipy() {
        // Reference: scipy.stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
        // (scipy 1.16): (-1.103701, 7.103701) with df 4.908 for the first pair,
        // (2.839988, 6.124298) with df 12.99 for the second.
        let a = [20.0, 22.0, 19.0, 20.0, 21.0];
        let b = [25.0, 18.0, 27.0, 24.0, 23.0];
        let interval = welch_interval(&a, &b, 0.95).unwrap();
        assert!(close(interval.low, -1.103701, 1e-5), "{interval:?}");
        assert!(close(interval.high, 7.103701, 1e-5), "{interval:?}");
        assert!(!interval.excludes_zero());
        let a = [20.0, 22.0, 19.0, 20.0, 21.0, 23.0, 18.0, 20.0];
        let b = [25.0, 24.0, 27.0, 24.0, 23.0, 26.0, 25.0];
        let interval = welch_interval(&a, &b, 0.95).unwrap();
        assert!(close(interval.low, 2.839988, 1e-5), "{interval:?}");
        assert!(close(interval.high, 6.124298, 1e-5), "{interval:?}");
        assert!(interval.excludes_zero());
        // Fewer than two values in a group: no interval.
        assert_eq!(welch_interval(&a[..1], &b, 0.95), None);
        // No spread at all: the difference itself.
        assert_eq!(
            welch_interval(&[2.0, 2.0], &[3.0, 3.0, 3.0], 0.95),
            Some(Interval {
                low: 1.0,
                high: 1.0
            })
        );
    }

    #[test]
    fn the_bootstrap_interval_covers_a_real_shift_and_is_reproducible() {
        // Control around 300 ms, variant around 340 ms, 200 calls each, spread of ±25 ms.
        let control: Vec<f64> = (0..200)
            .map(|i| 300.0 + ((i * 37) % 51) as f64 - 25.0)
            .collect();
        let variant: Vec<f64> = control.iter().map(|v| v + 40.0).collect();
        let interval = bootstrap_quantile_interval(&control, &variant, 0.5, 0.95, 2000, 7).unwrap();
        assert!(
            interval.low <= 40.0 && 40.0 <= interval.high,
            "{interval:?}"
        );
        assert!(interval.excludes_zero(), "{interval:?}");
        assert_eq!(
            bootstrap_quantile_interval(&control, &variant, 0.5, 0.95, 2000, 7),
            Some(interval)
        );
        // Two samples of the same calls: the interval straddles 0.
        let same = bootstrap_quantile_interval(&control, &control, 0.95, 0.95, 2000, 7).unwrap();
        assert!(!same.excludes_zero(), "{same:?}");
        assert_eq!(
            bootstrap_quantile_interval(&control[..1], &variant, 0.5, 0.95, 2000, 7),
            None
        );
    }

    #[test]
    fn a_resampled_quantile_is_the_quantile_of_the_resample() {
        // Check the counting walk against sorting the resample directly.
        let sorted: Vec<f64> = (0..50).map(|i| (i * i) as f64).collect();
        for q in [0.0, 0.1, 0.5, 0.95, 1.0] {
            let mut rng = StdRng::seed_from_u64(3);
            let mut counts = vec![0u32; sorted.len()];
            let walked = resampled_quantile(&sorted, &mut counts, q, &mut rng);
            let mut resample: Vec<f64> = sorted
                .iter()
                .zip(&counts)
                .flat_map(|(v, &c)| std::iter::repeat_n(*v, c as usize))
                .collect();
            resample.sort_by(f64::total_cmp);
            assert_eq!(Some(walked), quantile(&resample, q), "q = {q}");
        }
    }
}
