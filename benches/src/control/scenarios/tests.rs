use super::*;

fn arrival(proxy: u32, at: u64, service: u32, version: &str, addresses: &[&str]) -> Arrival {
    Arrival {
        proxy,
        at,
        service,
        version: version.into(),
        full: false,
        addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
        removed: Vec::new(),
    }
}

#[test]
fn a_proxy_reaches_a_change_with_its_first_new_version_of_the_service() {
    let before = vec!["v0".to_owned(), "v0".to_owned(), "v0".to_owned()];
    let log = vec![
        arrival(0, 10, 5, "x", &[]),  // another service
        arrival(0, 20, 0, "v0", &[]), // the version it had
        arrival(0, 30, 0, "v1", &[]),
        arrival(1, 40, 0, "v1", &[]),
        arrival(0, 50, 0, "v2", &[]),
    ];
    let firsts = first_new(&log, 0, &before);
    assert_eq!(firsts.len(), 2);
    assert_eq!(firsts[&0].at, 30);
    assert_eq!(firsts[&1].at, 40);
}

#[test]
fn rolling_progress_is_the_highest_step_seen_so_far() {
    let r = plan::rolled_address;
    let (one, two, three) = (r(1), r(2), r(3));
    let log = vec![
        arrival(7, 10, 3, "a", &[&one]),
        arrival(7, 20, 3, "b", &[&two, &three]), // steps coalesced into one version
        arrival(8, 15, 3, "c", &["10.0.0.1:8080", &one, &two]), // a full set
        arrival(8, 25, 3, "d", &[]),             // nothing rolled: progress stays
        arrival(8, 26, 4, "e", &[&three]),       // another service
    ];
    let p = progress(&log, 3);
    assert_eq!(p[&7], vec![(10, 1), (20, 3)]);
    assert_eq!(p[&8], vec![(15, 2), (25, 2)]);
}
