use super::*;

/// Feeds `input` in pieces of `step` bytes; returns the conflicting request and the final state.
fn run(input: &[u8], step: usize) -> (u64, u64, State) {
    let mut state = State::Head;
    let mut head = BytesMut::new();
    let mut requests = 0;
    let conflict = Conflict::default();
    for piece in input.chunks(step) {
        follow(
            &mut state,
            &mut head,
            65536,
            &mut requests,
            &conflict,
            piece,
        );
    }
    (conflict.0.load(Ordering::Acquire), requests, state)
}

fn every_split(input: &[u8]) -> Vec<(u64, u64)> {
    (1..=input.len())
        .map(|step| {
            let (c, r, _) = run(input, step);
            (c, r)
        })
        .collect()
}

#[test]
fn follows_keep_alive_requests_with_bodies() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n\
\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    for (conflict, requests) in every_split(input) {
        assert_eq!((conflict, requests), (0, 4));
    }
    assert!(matches!(run(input, 7).2, State::Head));
}

#[test]
fn records_the_request_with_both_framings() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for (conflict, requests) in every_split(input) {
        assert_eq!((conflict, requests), (2, 2));
    }
    let reversed = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\nHost: a\r\n\r\n0\r\n\r\n";
    assert_eq!(run(reversed, 3).0, 1);
}

#[test]
fn body_bytes_that_look_like_heads_are_not_heads() {
    let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut input =
        format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    input.extend_from_slice(body);
    assert_eq!(run(&input, 5).0, 0);
}

#[test]
fn gives_up_on_upgrades_connect_and_garbage() {
    for input in [
        &b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        assert!(
            matches!(run(input, 4).2, State::Off),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn reads_heads_with_bare_line_feeds_as_hyper_does() {
    let input = b"GET / HTTP/1.1\nHost: a\n\n\
POST / HTTP/1.1\r\nHost: a\nTRANSFER-encoding: gzip, Chunked\r\ncontent-LENGTH:  6 \n\r\n0\r\n\r\n";
    for (conflict, requests) in every_split(input) {
        assert_eq!((conflict, requests), (2, 2));
    }
    let chunked = b"POST / HTTP/1.1\nTransfer-Encoding: gzip, chunked\n\n3\r\nabc\r\n0\r\n\r\n\
GET /next HTTP/1.1\n\n";
    for (conflict, requests) in every_split(chunked) {
        assert_eq!((conflict, requests), (0, 2));
    }
}

#[test]
fn only_whole_field_names_count() {
    // Names that merely start like a framing field, and values that mention one, frame nothing.
    let input = b"POST / HTTP/1.1\r\nContent-Lengthy: 5\r\nX-Transfer-Encoding: chunked\r\n\
X-Note: transfer-encoding: chunked\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let (conflict, requests, state) = run(input, 9);
    assert_eq!((conflict, requests), (0, 2));
    assert!(matches!(state, State::Head));
    assert!(matches!(
        scan(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\nbody"),
        Some((39, Framing::Length(12)))
    ));
    assert!(scan(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n").is_none());
}

#[test]
fn a_length_that_is_not_a_number_beside_transfer_encoding_is_a_conflict() {
    // Found by the `framing` fuzz target: hyper ignores a `Content-Length` that follows a
    // `Transfer-Encoding` without reading it, so this request was forwarded, framed by chunks.
    let input =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6x\r\n\r\n\
0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    for (conflict, requests) in every_split(input) {
        assert_eq!((conflict, requests), (1, 1));
    }
    // Before it, and with a valid length in another line, too.
    let before = b"POST / HTTP/1.1\r\nContent-Length: +\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(run(before, 5).0, 1);
    // Alone it is hyper's to refuse (400): the guard stops following.
    let alone = b"POST / HTTP/1.1\r\nContent-Length: 6\r\nContent-Length: 6x\r\n\r\n";
    assert!(matches!(run(alone, 4).2, State::Off));
}
