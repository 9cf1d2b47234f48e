//! Protocol detection (`proxy/src/detect.rs`) on arbitrary first bytes.
//!
//! Properties, on any bytes and however they arrive:
//! - detection never panics and reads at most `MAX_PEEK` bytes (sniffing is bounded);
//! - the verdict is the rule the README states, whatever the split into reads: the HTTP/2
//!   preface is HTTP/2; an upper-case method token of 1 to 24 letters and a space is HTTP/1;
//!   nothing at all is a closed connection; anything else (a preface cut short by the end of
//!   the stream included) is opaque;
//! - the stream handed on replays every byte, read or not, exactly once and in order.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use herd_fuzz::{Pieces, pieces, seed_and_data};
use herd_proxy::detect::{Detected, MAX_PEEK, detect};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;

/// RFC 9113 §3.4.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest method token detection accepts.
const MAX_METHOD: usize = 24;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((seed, data)) = seed_and_data(input) else {
        return;
    };
    let expected = rule(data);
    let whole = vec![data.len()].into_iter().filter(|&n| n > 0).collect();
    for lengths in [whole, pieces(seed, data.len())] {
        let detected = runtime().block_on(detect_and_replay(data, lengths));
        assert_eq!(
            detected, expected,
            "detected {detected:?}, the rule says {expected:?}"
        );
    }
});

/// Detects over `data` read in pieces of `lengths`; checks the bytes read and the replay.
async fn detect_and_replay(data: &[u8], lengths: Vec<usize>) -> Detected {
    let reader = Pieces::new(data, lengths);
    let consumed = reader.consumed();
    let (detected, mut rewound) = detect(reader, Duration::from_secs(10))
        .await
        .expect("an in-memory read cannot fail");
    assert!(
        consumed.get() <= MAX_PEEK,
        "detection read {} bytes, more than {MAX_PEEK}",
        consumed.get()
    );
    let mut replayed = Vec::with_capacity(data.len());
    rewound
        .read_to_end(&mut replayed)
        .await
        .expect("an in-memory read cannot fail");
    assert_eq!(
        replayed, data,
        "the replayed stream differs from what was sent"
    );
    detected
}

/// The verdict the README promises for a client that sends `data` and then closes.
fn rule(data: &[u8]) -> Detected {
    if data.is_empty() {
        return Detected::Closed;
    }
    if data.starts_with(PREFACE) {
        return Detected::Http2;
    }
    if PREFACE.starts_with(data) {
        // The stream ended inside the preface.
        return Detected::Opaque;
    }
    if data.starts_with(&[0x16, 3]) {
        return Detected::Tls;
    }
    let method = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if (1..=MAX_METHOD).contains(&method) && data.get(method) == Some(&b' ') {
        return Detected::Http1;
    }
    Detected::Opaque
}
