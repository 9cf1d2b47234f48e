//! Puma, Mastodon's own app server, serving a Rack app of the test's.
//!
//! Debian's `puma` (5.6) and `ruby-rack` run the `config.ru` a test supplies from a temporary
//! directory, in single mode with 1-4 threads (Mastodon's web pods run few threads, so queueing
//! behind them is real), in the production environment (no development middleware rewriting
//! headers). Most tests use [`ECHO`], which answers every request with a JSON account of what
//! reached the app.

use std::net::SocketAddr;
use std::process::Stdio;

use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::netns::Pod;
use crate::{TIMEOUT, eventually};

/// A Rack app that describes the request it received, as JSON:
/// `method`, `path`, `query`, `protocol` (`SERVER_PROTOCOL`), `headers` (every `HTTP_*` entry of
/// the Rack env, plus `CONTENT_LENGTH`/`CONTENT_TYPE`), `body_bytes`, `body` (when under 64 KiB)
/// and `peer_port` (the port of the connection the request came on: equal ports mean a reused
/// connection).
///
/// `?sleep=SECONDS` delays the answer; `/chunked` answers `part0\npart1\npart2\n` with no
/// length, so Puma sends it chunked.
pub const ECHO: &str = r#"
require 'json'

run lambda { |env|
  query = Rack::Utils.parse_query(env['QUERY_STRING'])
  sleep(query['sleep'].to_f) if query['sleep']
  if env['PATH_INFO'] == '/chunked'
    parts = Enumerator.new { |y| 3.times { |i| y << "part#{i}\n" } }
    next [200, { 'content-type' => 'text/plain' }, parts]
  end
  body = env['rack.input'] ? env['rack.input'].read : ''
  socket = env['puma.socket']
  info = {
    method: env['REQUEST_METHOD'],
    path: env['PATH_INFO'],
    query: env['QUERY_STRING'],
    protocol: env['SERVER_PROTOCOL'],
    headers: env.select { |k, _| k.start_with?('HTTP_') || k == 'CONTENT_LENGTH' || k == 'CONTENT_TYPE' },
    body_bytes: body.bytesize,
    body: body.bytesize < 65536 ? body.dup.force_encoding('UTF-8').scrub : nil,
    peer_port: (socket.peeraddr[1] rescue nil),
  }
  [200, { 'content-type' => 'application/json' }, [JSON.generate(info)]]
}
"#;

/// A running Puma.
pub struct Puma {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Puma {
    /// Writes `config_ru` into a fresh directory and serves it on a free loopback port; returns
    /// once the port accepts connections.
    pub async fn start(config_ru: &str) -> Puma {
        Puma::start_on(config_ru, crate::ports::addr()).await
    }

    /// [`Puma::start`] on a given address (`[::1]:PORT` for IPv6).
    pub async fn start_on(config_ru: &str, addr: SocketAddr) -> Puma {
        Puma::launch(Command::new("puma"), config_ru, addr).await
    }

    /// [`Puma::start`] inside a pod's network namespace, on one of the pod's addresses (the
    /// host reaches it there over the pod's veth link).
    pub async fn start_in(pod: &Pod, config_ru: &str, addr: SocketAddr) -> Puma {
        Puma::launch(pod.command("puma"), config_ru, addr).await
    }

    /// Runs `puma` (a command that runs it, possibly in a namespace) serving `config_ru` on
    /// `addr`; returns once `addr` accepts connections.
    async fn launch(mut puma: Command, config_ru: &str, addr: SocketAddr) -> Puma {
        let dir = tempfile::Builder::new()
            .prefix("herd-puma-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("config.ru"), config_ru).expect("write config.ru");
        let log = std::fs::File::create(dir.path().join("puma.log")).expect("create puma.log");
        let mut child = puma
            .args(["--no-config", "-b"])
            .arg(format!("tcp://{addr}"))
            .args(["-t", "1:4", "--environment", "production", "config.ru"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn puma (is Debian's puma installed?)");
        let log_path = dir.path().join("puma.log");
        eventually("Puma to listen", TIMEOUT, || {
            let exited = child.try_wait().expect("poll puma");
            let log_path = log_path.clone();
            async move {
                if let Some(status) = exited {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!("puma exited with {status}:\n{log}");
                }
                TcpStream::connect(addr).await.ok().map(|_| ())
            }
        })
        .await;
        Puma { child, addr, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Puma's own log (boot messages, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("puma.log")).unwrap_or_default()
    }

    /// Stops Puma now (SIGKILL): the app is down.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Puma {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- puma log ----\n{}---- end ----", self.log());
        }
    }
}
