//! Order statistics shared by the benches and the cockpit's latency figures.

/// The nearest-rank `p`th percentile (1..=100) of `sorted` (ascending): the smallest value with
/// at least `p` % of the samples at or below it. `None` for no samples. Integer arithmetic, so
/// p95 of 20 samples is the 19th, never the 20th through a float rounding up.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: u32) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(nearest_rank(&v, 50), Some(10));
        assert_eq!(nearest_rank(&v, 95), Some(19));
        assert_eq!(nearest_rank(&v, 100), Some(20));
        assert_eq!(
            nearest_rank(&v, 0),
            Some(1),
            "the lowest rank is the first sample"
        );
        assert_eq!(nearest_rank(&[7], 95), Some(7));
        assert_eq!(nearest_rank::<u64>(&[], 50), None);
    }
}
