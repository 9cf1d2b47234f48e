//! curl, the client every operator reaches for first.
//!
//! `curl().header("Host: web.local").get(url).await` runs the real binary with the test's
//! arguments plus `-sS --max-time`, keeps the headers (`-D`) in a file of its own and the bodies
//! (every URL's, in order) from stdout, and returns them parsed: the final response's status,
//! version and headers, all response heads (interim `100 Continue` included, for tests that
//! care), the body, and curl's stderr (with `.verbose()`, curl's account of which connection it
//! used).

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A curl invocation being built.
pub struct Curl {
    /// What runs curl (empty: curl itself), e.g. a pod's `ip netns exec ... setpriv ...`.
    wrapper: Vec<OsString>,
    args: Vec<OsString>,
    max_time: Duration,
    stdin: Option<Vec<u8>>,
}

/// Starts a curl command line.
pub fn curl() -> Curl {
    Curl {
        wrapper: Vec::new(),
        args: Vec::new(),
        max_time: crate::TIMEOUT,
        stdin: None,
    }
}

/// One response head as curl saw it.
#[derive(Clone, Debug)]
pub struct Head {
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a curl run produced.
#[derive(Debug)]
pub struct Output {
    /// curl's exit code (0 on success; 28 timeout, 52 empty reply, 56 receive failure, ...).
    pub exit: Option<i32>,
    /// Every response head in order, interim ones included.
    pub heads: Vec<Head>,
    pub body: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// The final response's head; panics (with curl's stderr) if there was none.
    pub fn head(&self) -> &Head {
        self.heads
            .iter()
            .rev()
            .find(|h| !(100..200).contains(&h.status) || h.status == 101)
            .unwrap_or_else(|| {
                panic!(
                    "curl got no response (exit {:?}): {}",
                    self.exit, self.stderr
                )
            })
    }

    pub fn status(&self) -> u16 {
        self.head().status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head().header(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The body as a sequence of JSON values (one per URL when curl fetched several).
    pub fn json_stream(&self) -> Vec<serde_json::Value> {
        serde_json::Deserializer::from_slice(&self.body)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("body is not JSON values ({e}): {:?}", self.text()))
    }
}

impl Curl {
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs curl inside `pod` as `uid` (an app of the pod, as far as iptables can tell).
    pub fn in_pod(mut self, pod: &crate::netns::Pod, uid: u32) -> Self {
        self.wrapper = pod.wrapper_as(uid);
        self
    }

    /// `-H header` (`"Name: value"`).
    pub fn header(self, header: &str) -> Self {
        self.arg("-H").arg(header)
    }

    /// `-x http://addr`: send requests to `addr` in absolute form, as to a forward proxy.
    pub fn proxy(self, addr: std::net::SocketAddr) -> Self {
        self.arg("-x").arg(format!("http://{addr}"))
    }

    /// `-v`: curl narrates connections and headers on stderr.
    pub fn verbose(self) -> Self {
        self.arg("-v")
    }

    /// `--http2-prior-knowledge`: h2c without an upgrade.
    pub fn http2_prior_knowledge(self) -> Self {
        self.arg("--http2-prior-knowledge")
    }

    /// `--data-binary @path`: POST a file.
    pub fn post_file(self, path: &Path) -> Self {
        let mut data = OsString::from("@");
        data.push(path);
        self.arg("--data-binary").arg(data)
    }

    /// `-T -` with `bytes` on stdin: a streamed (chunked) PUT.
    pub fn put_stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = Some(bytes);
        self.arg("-T").arg("-")
    }

    /// Overrides `--max-time` (default [`crate::TIMEOUT`]).
    pub fn max_time(mut self, max_time: Duration) -> Self {
        self.max_time = max_time;
        self
    }

    /// Runs curl on `url` (plus whatever URLs are already in the arguments).
    pub async fn get(self, url: impl Into<OsString>) -> Output {
        self.arg(url).run().await
    }

    /// Runs curl with the arguments as given.
    pub async fn run(self) -> Output {
        let dir = tempfile::tempdir().expect("temp dir");
        let heads = dir.path().join("heads");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                // curl, as another user, writes the heads here.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                    .expect("chmod curl's directory");
                let mut command = Command::new(program);
                command.args(args).arg("curl");
                command
            }
            None => Command::new("curl"),
        };
        command
            .arg("-sS")
            .arg("--max-time")
            .arg(format!("{:.1}", self.max_time.as_secs_f64()))
            .arg("-D")
            .arg(&heads)
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let start = Instant::now();
        let mut child = command.spawn().expect("spawn curl (is it installed?)");
        if let Some(bytes) = self.stdin {
            let mut stdin = child.stdin.take().expect("curl stdin");
            tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
            });
        }
        let output = crate::within(
            "curl",
            self.max_time + Duration::from_secs(5),
            child.wait_with_output(),
        )
        .await
        .expect("wait for curl");
        let elapsed = start.elapsed();
        let heads = std::fs::read_to_string(&heads).unwrap_or_default();
        Output {
            exit: output.status.code(),
            heads: parse_heads(&heads),
            body: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }
}

fn parse_heads(text: &str) -> Vec<Head> {
    let mut heads = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("HTTP/") {
            let mut parts = line.split_whitespace();
            let version = parts.next().unwrap_or_default().to_owned();
            let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            heads.push(Head {
                version,
                status,
                headers: Vec::new(),
            });
        } else if let (Some(head), Some((name, value))) = (heads.last_mut(), line.split_once(':')) {
            head.headers
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    heads
}
