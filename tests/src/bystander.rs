//! A well-behaved client that keeps sending requests while a test attacks the proxy: the
//! measure of "other clients are unaffected".
//!
//! [`Bystander::start`] sends `GET`s one after another (10 ms apart) for as long as it runs,
//! alternating an HTTP/2 connection of its own and a fresh HTTP/1.1 connection, so both of the
//! proxy's servers are watched. Each request must answer 200 within [`Bystander::LIMIT`];
//! [`Bystander::stop`] returns how many did and what happened to those that did not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// What the bystander saw.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: usize,
    /// Each failure: which protocol and what went wrong.
    pub failures: Vec<String>,
    pub slowest: Duration,
}

pub struct Bystander {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Report>,
}

impl Bystander {
    /// The longest one of its requests may take; longer is a failure.
    pub const LIMIT: Duration = Duration::from_secs(2);

    /// Starts requesting `http://authority{path}` from `addr`.
    pub async fn start(addr: SocketAddr, authority: &str, path: &str) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let authority = authority.to_owned();
        let path = path.to_owned();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut report = Report::default();
                let mut h2 = None;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let started = Instant::now();
                    let (protocol, result) = if n.is_multiple_of(2) {
                        ("HTTP/2", http2(addr, &authority, &path, &mut h2).await)
                    } else {
                        ("HTTP/1.1", http1(addr, &authority, &path).await)
                    };
                    let took = started.elapsed();
                    report.slowest = report.slowest.max(took);
                    match result {
                        Ok(()) => report.ok += 1,
                        Err(error) => report
                            .failures
                            .push(format!("request {n} ({protocol}, {took:?}): {error}")),
                    }
                    // Pacing: a client, not a load generator competing with the attack.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                report
            }
        });
        Bystander { stop, task }
    }

    /// Stops after the request in flight and returns the report.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        crate::within("the bystander to stop", crate::TIMEOUT, self.task)
            .await
            .expect("the bystander panicked")
    }
}

async fn http1(addr: SocketAddr, authority: &str, path: &str) -> Result<(), String> {
    let request = async {
        let mut sender = crate::client::http1(addr).await;
        let response = sender
            .send_request(crate::client::get(authority, path))
            .await
            .map_err(|e| e.to_string())?;
        check(response).await
    };
    tokio::time::timeout(Bystander::LIMIT, request)
        .await
        .map_err(|_| format!("no answer within {:?}", Bystander::LIMIT))?
}

/// A request on the bystander's HTTP/2 connection, opened (again) when there is none.
async fn http2(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    connection: &mut Option<crate::client::H2>,
) -> Result<(), String> {
    let request = async {
        if connection
            .as_ref()
            .is_none_or(|c| c.connection.is_finished() || c.sender.is_closed())
        {
            *connection = Some(crate::client::http2(addr).await);
        }
        let sender = &mut connection.as_mut().expect("a connection").sender;
        let response = sender
            .send_request(crate::client::get(authority, path))
            .await
            .map_err(|e| e.to_string())?;
        check(response).await
    };
    let result = tokio::time::timeout(Bystander::LIMIT, request)
        .await
        .map_err(|_| format!("no answer within {:?}", Bystander::LIMIT))?;
    if result.is_err() {
        *connection = None;
    }
    result
}

async fn check(response: http::Response<hyper::body::Incoming>) -> Result<(), String> {
    use http_body_util::BodyExt;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{status}, body failed: {e}"))?
        .to_bytes();
    if status == 200 {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}
