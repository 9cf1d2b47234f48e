use super::*;

#[test]
fn splices_between_markers_or_appends_them() {
    let file = format!("# R\n\nbefore\n{BEGIN}\nold\n{END}\nafter\n");
    assert_eq!(
        splice(&file, "new\n"),
        format!("# R\n\nbefore\n{BEGIN}\nnew\n{END}\nafter\n")
    );
    assert_eq!(
        splice("# R\n", "new"),
        format!("# R\n\n{BEGIN}\nnew\n{END}\n")
    );
}

#[test]
fn numbers_read_well() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(10_000), "10,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
    assert_eq!(s(0.0123), "12.3 ms");
    assert_eq!(s(1.5), "1.50 s");
    assert_eq!(mib(3 << 20), "3 MiB");
}

#[test]
fn an_empty_run_renders_its_header_and_failure() {
    let r = Results {
        proxies: 10,
        failure: Some("sync: herd-control exited".into()),
        ..Results::default()
    };
    let text = render(&r);
    assert!(text.contains("10 simulated proxies"));
    assert!(text.contains("**Failed:** sync: herd-control exited"));
}
