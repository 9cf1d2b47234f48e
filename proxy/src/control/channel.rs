//! How the proxy reaches herd-control's gRPC ports: plaintext, or TLS that checks the control
//! plane's SPIFFE ID (`proxy.identity.controlIdentity`).
//!
//! tonic dials plaintext here ("http://" URIs) and leaves the TLS to a connector of ours, so the
//! handshake uses the same rustls configurations (and SPIFFE verifiers) as every other mesh
//! connection, instead of a second TLS setup inside tonic that only knows DNS names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// A channel to `addr`; over TLS with `tls` (which says which server identity it accepts and
/// whether this proxy presents a certificate), else plaintext.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    keep_alive: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address is a valid URI")
        .connect_timeout(timeout);
    if keep_alive {
        endpoint = endpoint
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
    }
    let Some(config) = tls else {
        return endpoint.connect().await;
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                // The server's SPIFFE ID is what is checked; an IP address sends no SNI.
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}
