use super::*;

#[test]
fn reads_the_series_it_needs() {
    let text = "# HELP herd_control_proxies x\n# TYPE herd_control_proxies gauge\n\
        herd_control_proxies 10000\n\
        herd_control_endpoint_watches 100000\n\
        herd_control_updates_sent_total{kind=\"endpoints\"} 123456\n\
        herd_control_updates_sent_total{kind=\"routing\"} 10000\n\
        herd_control_verdicts_total{kind=\"endpoints\",result=\"ack\"} 99\n\
        herd_control_verdicts_total{kind=\"endpoints\",result=\"nack\"} 2\n\
        herd_control_verdicts_total{kind=\"routing\",result=\"nack\"} 1\n\
        herd_control_mesh_changes_total 3\n";
    let m = Metrics::parse(text);
    assert_eq!(m.proxies, 10000.0);
    assert_eq!(m.watches, 100000.0);
    assert_eq!(m.endpoints_sent, 123456.0);
    assert_eq!(m.routing_sent, 10000.0);
    assert_eq!(m.nacks, 3.0);
    assert_eq!(m.mesh_changes, 3.0);
}

#[test]
fn parses_plain_and_chunked_responses() {
    let plain = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n";
    assert_eq!(parse_response(plain).unwrap(), (200, "ready\n".to_owned()));
    let chunked = "HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n4\r\nnot \r\n6\r\nready\n\r\n0\r\n\r\n";
    assert_eq!(
        parse_response(chunked).unwrap(),
        (503, "not ready\n".to_owned())
    );
    assert!(parse_response("HTTP/1.1 200").is_err());
}
