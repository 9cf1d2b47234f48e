//! The proxy's own account of its endpoints: admin `GET /endpoints`, read into plain structs.
//!
//! ```json
//! {"services":[{"name":"web","algorithm":"peak-ewma","pending":0,"endpoints":[
//!   {"address":"127.0.0.1:3000","weight":1,"state":"ready","inFlight":0,"rttMs":12.5,
//!    "consecutiveFailures":0,"ejections":0}]}]}
//! ```
//!
//! Every field is required: a missing or mistyped one fails the test with the whole document,
//! so a mismatch between the proxy and this reader is reported precisely.

use std::net::SocketAddr;

use serde_json::Value;

use crate::Proxy;

/// One service as `/endpoints` shows it.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub algorithm: String,
    pub pending: u64,
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint as `/endpoints` shows it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: String,
    pub weight: u64,
    /// `ready`, `ejected` or `probing`.
    pub state: String,
    pub in_flight: u64,
    /// `None` when the proxy reports `null` (no latency measured yet).
    pub rtt_ms: Option<f64>,
    pub consecutive_failures: u64,
    pub ejections: u64,
}

impl Service {
    /// The endpoint at `addr`; panics (listing the others) if there is none.
    pub fn endpoint(&self, addr: SocketAddr) -> &Endpoint {
        self.find(addr).unwrap_or_else(|| {
            panic!(
                "service {} has no endpoint {addr} in /endpoints: {:?}",
                self.name, self.endpoints
            )
        })
    }

    /// The endpoint at `addr`, if the proxy lists it.
    pub fn find(&self, addr: SocketAddr) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.address.parse::<SocketAddr>().ok() == Some(addr))
    }

    /// How many endpoints are ejected right now.
    pub fn ejected(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.state == "ejected")
            .count()
    }

    /// The addresses listed, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.address.clone()).collect()
    }
}

/// Every service in `GET /endpoints`.
pub async fn all(proxy: &Proxy) -> Vec<Service> {
    let response = proxy.admin_get("/endpoints").await;
    assert_eq!(
        response.status,
        200,
        "GET /endpoints: {} {}",
        response.status,
        response.text()
    );
    parse(&response.json())
}

/// Service `name` in `GET /endpoints`; panics if it is not there.
pub async fn service(proxy: &Proxy, name: &str) -> Service {
    let services = all(proxy).await;
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    services
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name:?} in /endpoints (have {names:?})"))
}

/// Reads a `/endpoints` document.
pub fn parse(doc: &Value) -> Vec<Service> {
    let services = doc["services"]
        .as_array()
        .unwrap_or_else(|| panic!("/endpoints has no services array: {doc}"));
    services
        .iter()
        .map(|s| Service {
            name: string(s, "name", doc),
            algorithm: string(s, "algorithm", doc),
            pending: number(s, "pending", doc),
            endpoints: s["endpoints"]
                .as_array()
                .unwrap_or_else(|| panic!("a service without an endpoints array: {doc}"))
                .iter()
                .map(|e| Endpoint {
                    address: string(e, "address", doc),
                    weight: number(e, "weight", doc),
                    state: string(e, "state", doc),
                    in_flight: number(e, "inFlight", doc),
                    rtt_ms: match &e["rttMs"] {
                        Value::Null => None,
                        v => Some(
                            v.as_f64()
                                .unwrap_or_else(|| panic!("rttMs is not a number in {e}: {doc}")),
                        ),
                    },
                    consecutive_failures: number(e, "consecutiveFailures", doc),
                    ejections: number(e, "ejections", doc),
                })
                .collect(),
        })
        .collect()
}

fn string(value: &Value, field: &str, doc: &Value) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field:?} is not a string in {value}: {doc}"))
        .to_owned()
}

fn number(value: &Value, field: &str, doc: &Value) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field:?} is not a whole number in {value}: {doc}"))
}
