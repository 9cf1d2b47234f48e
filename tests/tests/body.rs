//! Bodies stream with backpressure: a 100 MiB upload to an app that reads slowly passes
//! through the proxy without the proxy holding it.
//!
//! The peak resident memory of the proxy during the upload is printed (run with
//! `--no-capture` to see it): `peak RSS during a 100 MiB upload: ...`.

use std::io::Write;
use std::time::{Duration, Instant};

use herd_tests::{Digest, Proxy, curl, server};

const MIB: u64 = 1 << 20;
const UPLOAD: u64 = 100 * MIB;
/// The app reads 25 MiB/s, so the upload takes about four seconds: curl could send it much
/// faster, so anything not held back by backpressure piles up in the proxy.
const APP_READ_RATE: u64 = 25 * MIB;
/// A proxy that streams holds a few buffers per connection; one that buffers holds 100 MiB.
const PEAK_RSS_BOUND: u64 = 40 * MIB;

/// Writes `UPLOAD` bytes of pseudo-random data (each MiB tagged with its index, so a lost or
/// repeated piece changes the digest) and returns the digest.
fn write_upload(path: &std::path::Path) -> Digest {
    let mut block = vec![0u8; MIB as usize];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in block.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create upload"));
    let mut digest = Digest::default();
    for index in 0..UPLOAD / MIB {
        block[..8].copy_from_slice(&index.to_be_bytes());
        digest.update(&block);
        file.write_all(&block).expect("write upload");
    }
    file.flush().expect("flush upload");
    digest
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_upload_to_a_slow_app_streams_in_bounded_memory() {
    let app = server::slow_reader(APP_READ_RATE).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    let file = proxy.dir().join("upload.bin");
    let sent = write_upload(&file);
    let idle_rss = proxy.rss_bytes().expect("read the proxy's VmRSS");

    let upload = tokio::spawn(
        curl()
            .max_time(Duration::from_secs(120))
            .arg("-T")
            .arg(&file)
            .get(proxy.inbound_url("/media")),
    );
    let start = Instant::now();
    let mut peak = idle_rss;
    while !upload.is_finished() {
        peak = peak.max(proxy.rss_bytes().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = upload.await.expect("curl task");
    let elapsed = start.elapsed();

    println!(
        "peak RSS during a 100 MiB upload: {:.1} MiB (idle {:.1} MiB, upload took {elapsed:.1?})",
        peak as f64 / MIB as f64,
        idle_rss as f64 / MIB as f64,
    );
    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.text(), format!("received {UPLOAD} bytes"));
    assert_eq!(
        app.uploads(),
        vec![server::Upload {
            bytes: UPLOAD,
            digest: sent.value()
        }],
        "the app did not receive exactly the bytes sent"
    );
    // The app's pace bounds the upload from below: a proxy that answered early or dropped data
    // would finish sooner.
    assert!(
        elapsed >= Duration::from_secs(3),
        "the upload took only {elapsed:?}"
    );
    assert!(
        peak < PEAK_RSS_BOUND,
        "the proxy's RSS peaked at {:.1} MiB during the upload (bound {} MiB)",
        peak as f64 / MIB as f64,
        PEAK_RSS_BOUND / MIB
    );
}
