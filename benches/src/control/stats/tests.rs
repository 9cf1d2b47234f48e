use super::*;

#[test]
fn nearest_rank_percentiles() {
    assert_eq!(quantiles(&[]), None);
    let one = quantiles(&[0.5]).unwrap();
    assert_eq!((one.p50, one.p99, one.max, one.n), (0.5, 0.5, 0.5, 1));
    let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    let q = quantiles(&hundred).unwrap();
    assert_eq!(
        (q.min, q.p50, q.p99, q.max, q.n),
        (1.0, 50.0, 99.0, 100.0, 100)
    );
    let thousand: Vec<f64> = (1..=1000).map(f64::from).collect();
    let q = quantiles(&thousand).unwrap();
    assert_eq!((q.p50, q.p99, q.max), (500.0, 990.0, 1000.0));
}

#[test]
fn medians_and_ranges() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(range(&[2.0, 5.0, 1.0]), Some((1.0, 5.0)));
    assert_eq!(range(&[]), None);
}
