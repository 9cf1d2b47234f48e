//! The command line: `--check`, exit code 64 with one `FILE:LINE:COLUMN:` line for bad files
//! and flags, and logging controlled by `HERD_LOG` / `HERD_LOG_FORMAT`.

use std::path::{Path, PathBuf};

use herd_tests::{Proxy, Puma, curl, proxy, puma};

/// The file issue 2 says must work as written.
const ISSUE_EXAMPLE: &str = "\
proxy:
  inbound:  { listen: 127.0.0.1:4143, app: 127.0.0.1:3000 }   # traffic for this pod -> the app
  outbound: { listen: 127.0.0.1:4140 }                        # the app's calls, routed by Host
  admin:    { listen: 127.0.0.1:4191 }
services:
  - name: web
    authorities: [web.local, web.local:3000]
    endpoints: [127.0.0.1:3000]
  - name: streaming
    authorities: [streaming.local]
    endpoints: [127.0.0.1:4000]
    routes:
      - match: { pathPrefix: /api/v1/streaming }
        timeout: 0s
  - name: redis
    protocol: opaque
    listen: 127.0.0.1:16379        # opaque services get a listener of their own outside transparent mode
    endpoints: [127.0.0.1:6379]
";

/// Line 8 has a protocol nobody speaks.
const BAD_PROTOCOL: &str = "\
proxy:
  admin:
    listen: 127.0.0.1:4191
services:
  - name: web
    authorities: [web.local]
    endpoints: [127.0.0.1:3000]
    protocol: carrier-pigeon
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Asserts stderr is exactly one line, `FILE:LINE:COLUMN: message`, and returns
/// `(line, message)`.
fn one_located_line(stderr: &str, file: &Path) -> (u32, String) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one stderr line, got:\n{stderr}"
    );
    let prefix = format!("{}:", file.display());
    let rest = lines[0]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{:?} does not start with {prefix:?}", lines[0]));
    let mut parts = rest.splitn(3, ':');
    let line = parts.next().and_then(|l| l.parse().ok());
    let column = parts.next().and_then(|c| c.parse::<u32>().ok());
    let message = parts.next().unwrap_or_default().trim().to_owned();
    match (line, column) {
        (Some(line), Some(_)) if !message.is_empty() => (line, message),
        _ => panic!("{:?} is not FILE:LINE:COLUMN: message", lines[0]),
    }
}

#[tokio::test]
async fn check_accepts_the_issue_example_and_every_example_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![write(dir.path(), "issue-2.yaml", ISSUE_EXAMPLE)];
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
    if let Ok(entries) = std::fs::read_dir(&examples) {
        let mut found: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        found.sort();
        files.extend(found);
    }

    for file in files {
        let exit = proxy::run(&["--config", file.to_str().unwrap(), "--check"]).await;
        assert_eq!(
            exit.code,
            Some(0),
            "{} failed --check:\n{}",
            file.display(),
            exit.stderr
        );
    }
}

#[tokio::test]
async fn check_refuses_a_bad_file_with_one_located_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", BAD_PROTOCOL);

    let exit = proxy::run(&["--config", file.to_str().unwrap(), "--check"]).await;

    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    let (line, message) = one_located_line(&exit.stderr, &file);
    assert_eq!(line, 8, "{}", exit.stderr);
    assert!(
        message.contains("protocol"),
        "the message does not name the field: {message}"
    );
}

#[tokio::test]
async fn running_with_a_bad_file_exits_64_with_one_located_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", BAD_PROTOCOL);

    let exit = proxy::run(&["--config", file.to_str().unwrap()]).await;

    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    assert_eq!(one_located_line(&exit.stderr, &file).0, 8);
}

#[tokio::test]
async fn an_unknown_flag_exits_64_with_one_line() {
    let exit = proxy::run(&["--frobnicate"]).await;

    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    let lines: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{}", exit.stderr);
    assert!(
        lines[0].contains("--frobnicate"),
        "the line does not say what was wrong: {}",
        lines[0]
    );
}

#[tokio::test]
async fn a_missing_file_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.yaml");

    for check in [true, false] {
        let mut args = vec!["--config", missing.to_str().unwrap()];
        if check {
            args.push("--check");
        }
        let exit = proxy::run(&args).await;
        assert_eq!(exit.code, Some(64), "{args:?}: {}", exit.stderr);
        let lines: Vec<&str> = exit
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: expected one line:\n{}",
            exit.stderr
        );
        assert!(lines[0].contains("nowhere.yaml"), "{args:?}: {}", lines[0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn herd_log_format_json_logs_one_json_object_per_line() {
    let app = Puma::start(puma::ECHO).await;
    let yaml = inbound_only(&app);
    let proxy =
        Proxy::start_with_env(&yaml, &[("HERD_LOG", "debug"), ("HERD_LOG_FORMAT", "json")]).await;
    assert_eq!(curl().get(proxy.inbound_url("/")).await.status(), 200);

    let stderr = proxy.stderr_text();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing was logged at debug level");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object(), "not a JSON object: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn herd_log_sets_the_level() {
    let app = Puma::start(puma::ECHO).await;
    let yaml = inbound_only(&app);
    let quiet = Proxy::start_with_env(&yaml, &[("HERD_LOG", "off")]).await;
    let chatty = Proxy::start_with_env(&yaml, &[("HERD_LOG", "debug")]).await;
    for proxy in [&quiet, &chatty] {
        assert_eq!(curl().get(proxy.inbound_url("/")).await.status(), 200);
    }

    assert_eq!(quiet.stderr_text(), "", "HERD_LOG=off still logged");
    assert!(
        chatty.stderr_text().contains("DEBUG"),
        "HERD_LOG=debug logged no DEBUG line:\n{}",
        chatty.stderr_text()
    );
}

/// A mesh file with an inbound listener in front of `app` and an admin listener.
fn inbound_only(app: &Puma) -> String {
    format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {}
          admin:
            listen: $ADMIN
        ",
        app.addr()
    )
}

/// Threads of a running process, from /proc.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the proxy is running")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn herd_proxy_workers_sets_the_threads_that_serve_traffic() {
    let app = Puma::start(puma::ECHO).await;
    let yaml = inbound_only(&app);
    // One worker serves on the main thread; three add three threads to that.
    let one = Proxy::start_with_env(&yaml, &[("HERD_PROXY_WORKERS", "1")]).await;
    let three = Proxy::start_with_env(&yaml, &[("HERD_PROXY_WORKERS", "3")]).await;
    for proxy in [&one, &three] {
        for _ in 0..20 {
            assert_eq!(curl().get(proxy.inbound_url("/")).await.status(), 200);
        }
    }
    assert_eq!(threads(three.pid()) - threads(one.pid()), 3);
}

#[tokio::test]
async fn a_bad_worker_count_exits_64_with_one_line() {
    for bad in ["0", "many", "2000"] {
        let exit = proxy::run(&["--config", "unused.yaml", "--workers", bad]).await;
        assert_eq!(exit.code, Some(64), "--workers {bad}: {}", exit.stderr);
        let lines: Vec<&str> = exit
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "expected one line:\n{}", exit.stderr);
        assert!(lines[0].contains("--workers"), "{}", lines[0]);
    }
}
