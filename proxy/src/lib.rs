//! herd-proxy: the sidecar.
//!
//! A connection walks the stages of the request path, one module each, in this order:
//!
//! | stage | decides | module |
//! | --- | --- | --- |
//! | listen | accept; the original destination; one task and span per connection | [`listen`] |
//! | detect | HTTP/1, HTTP/2, or opaque bytes, within bounded bytes and time | [`detect`] |
//! | route | which service (by authority) and which of its routes | [`route`] |
//! | balance | which endpoint of the service | [`balance`] |
//! | endpoint | a pooled connection to the endpoint | [`endpoint`] |
//!
//! (mTLS, a `tls` stage between detect and route, is not built yet: all traffic is plaintext.)
//! HTTP requests are served and forwarded by [`http`]; opaque bytes by [`opaque`]. Routing
//! comes from an immutable [`snapshot::Snapshot`] published on a watch channel, replaced whole by
//! [`reload`] or by [`control`] (a herd-control). [`errors`] is the one place a failure becomes a
//! status code.
//!
//! Dependencies run one way, down the request path: a stage uses the stages after it, never
//! those before, so each can be read and tested with only what lies below it.
//!
//! ```text
//! http, opaque  ->  snapshot  ->  route  ->  retry  ->  balance  ->  endpoint
//!      |                                                                |
//!   response (the way back: the endpoint's body and leases)           body (the client's)
//!                 errors, outcome, metrics: below every stage, knowing none of them
//! ```
//!
//! The balancer wraps endpoints ([`balance::Member`]: an endpoint with its load and health), so
//! [`endpoint`] knows nothing of it; [`retry`] takes a plain [`retry::Plan`] from the route stage;
//! a failing stage hands up a plain classification ([`errors::ProxyError`], [`outcome::Outcome`])
//! that [`errors`] maps to a status without knowing who failed, and the balancers set their own
//! gauges through [`metrics::BalancerGauges`]. [`control`] builds snapshots, so it sits above them; the
//! endpoint subscriptions that the route stage touches live apart, below, in
//! [`control::subscription`].
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod authorize;
pub mod balance;
pub mod body;
pub mod control;
pub mod detect;
pub mod discover;
pub mod drain;
pub mod endpoint;
pub mod errors;
pub mod http;
pub mod identity;
pub mod init;
pub mod listen;
pub mod metrics;
pub mod opaque;
pub mod outcome;
pub mod reload;
pub mod response;
pub mod retry;
pub mod route;
mod run;
pub mod snapshot;
pub mod wire;

pub use run::{Origin, run};
