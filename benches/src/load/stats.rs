//! Medians and spread across rounds.

/// The median (mean of the middle two for an even count); `None` for no values. NaNs are
/// ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if !n.is_multiple_of(2) {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// How much a figure moved across rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
    pub median: f64,
    /// (max − min) / |median|, in percent; `None` when the median is 0.
    pub percent: Option<f64>,
    pub rounds: usize,
}

pub fn spread(values: &[f64]) -> Option<Spread> {
    let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    let median = median(&v)?;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let percent = (median != 0.0).then(|| (max - min) / median.abs() * 100.0);
    Some(Spread {
        min,
        max,
        median,
        percent,
        rounds: v.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn spreads() {
        let s = spread(&[90.0, 100.0, 110.0, 105.0, 95.0]).unwrap();
        assert_eq!((s.min, s.max, s.median, s.rounds), (90.0, 110.0, 100.0, 5));
        assert!((s.percent.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(spread(&[0.0, 0.0]).unwrap().percent, None);
        assert_eq!(spread(&[]), None);
    }
}
