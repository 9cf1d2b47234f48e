//! What an attempt's result says about the endpoint that served it.
//!
//! The failing stage hands this plain classification up: the endpoint stage (through
//! [`crate::errors::ProxyError::outcome`]) or the stage that saw the response. The balancer
//! learns from it (peak-EWMA latency, outlier detection) without anyone below it knowing there is
//! a balancer, and the error mapping stays free of who consumes it. It sits below every stage
//! that uses it, so none of them imports another's.

/// What a request's response tells the balancer about its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// No connection could be made.
    ConnectFailure,
    /// The response did not come within the route's timeout.
    Timeout,
    /// The connection failed after the request was sent.
    Reset,
}
