//! Real connections on loopback: plaintext, TLS without and with a client certificate, and a
//! client certificate from another CA.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::StreamExt;
use herd_identity::tls::{anonymous_client_config, client_config, service_server_config};
use herd_identity::{CsrLimits, Issuer, Keypair, Leaf, TrustBundle, build_csr, inspect_csr};
use prometheus::Opts;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;

use super::*;

fn issuer() -> Issuer {
    Issuer::generate("cluster.local", Duration::from_secs(86_400)).unwrap()
}

fn leaf(issuer: &Issuer, id: &SpiffeId) -> (Leaf, Keypair) {
    let key = Keypair::generate().unwrap();
    let request = inspect_csr(&build_csr(&key, id).unwrap(), &CsrLimits::default()).unwrap();
    let leaf = issuer
        .issue(&request, id, Duration::from_secs(3600))
        .unwrap();
    (leaf, key)
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

struct Port {
    addr: SocketAddr,
    conns: ReceiverStream<io::Result<Conn>>,
    counts: IntCounterVec,
}

async fn port(tls: Option<ServerConfig>) -> Port {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = IntCounterVec::new(Opts::new("c", "c"), &["port", "security"]).unwrap();
    let tls = tls.map(|c| watch::channel(Arc::new(c)).1);
    Port {
        addr,
        conns: incoming(listener, tls, "discovery", counts.clone()),
        counts,
    }
}

impl Port {
    async fn next(&mut self) -> Conn {
        tokio::time::timeout(Duration::from_secs(10), self.conns.next())
            .await
            .expect("a connection within 10 s")
            .expect("stream open")
            .expect("accepted")
    }

    fn count(&self, security: &str) -> u64 {
        self.counts
            .with_label_values(&["discovery", security])
            .get()
    }
}

/// Connects with TLS (and writes a byte so the server's handshake completes); the client's
/// result.
async fn tls_client(addr: SocketAddr, config: rustls::ClientConfig) -> io::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    tls.write_all(b"x").await?;
    tls.flush().await
}

#[tokio::test]
async fn plaintext_tls_and_mutual_tls_share_the_port_and_say_what_they_proved() {
    let ca = issuer();
    let bundle = TrustBundle::from_pem(&ca.certificate_pem()).unwrap();
    let control = id("spiffe://cluster.local/ns/herd/sa/herd-control");
    let web = id("spiffe://cluster.local/ns/mastodon/sa/web");
    let (own, own_key) = leaf(&ca, &control);
    let mut port = port(Some(
        service_server_config(&own, &own_key, &bundle, &[b"h2"]).unwrap(),
    ))
    .await;

    // Plaintext (an HTTP/2 preface's first bytes).
    let mut plain = TcpStream::connect(port.addr).await.unwrap();
    plain.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let conn = port.next().await;
    assert!(!conn.peer.tls);
    assert_eq!(conn.peer.identity, None);
    assert_eq!(conn.peer.addr, Some(plain.local_addr().unwrap()));

    // TLS without a client certificate: a proxy asking for its first one.
    let anonymous = anonymous_client_config(&bundle, &control, &[b"h2"]).unwrap();
    tls_client(port.addr, anonymous).await.unwrap();
    let conn = port.next().await;
    assert_eq!(conn.peer.security(), "tls");

    // Mutual TLS: the proxy's verified identity comes with the connection.
    let (proxy, proxy_key) = leaf(&ca, &web);
    let mutual = client_config(&proxy, &proxy_key, &bundle, &control, &[b"h2"]).unwrap();
    tls_client(port.addr, mutual).await.unwrap();
    let conn = port.next().await;
    assert_eq!(conn.peer.security(), "mutual");
    assert_eq!(conn.peer.identity.as_deref(), Some(&web));

    assert_eq!(port.count("plaintext"), 1);
    assert_eq!(port.count("tls"), 1);
    assert_eq!(port.count("mutual"), 1);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_and_others_are_unaffected() {
    let ca = issuer();
    let bundle = TrustBundle::from_pem(&ca.certificate_pem()).unwrap();
    let control = id("spiffe://cluster.local/ns/herd/sa/herd-control");
    let (own, own_key) = leaf(&ca, &control);
    let mut port = port(Some(
        service_server_config(&own, &own_key, &bundle, &[b"h2"]).unwrap(),
    ))
    .await;

    // A silent client first: it holds up no one.
    let _silent = TcpStream::connect(port.addr).await.unwrap();
    let other = issuer();
    let (stranger, stranger_key) = leaf(&other, &id("spiffe://cluster.local/ns/mastodon/sa/web"));
    let both = TrustBundle::from_pem(&(ca.certificate_pem() + &other.certificate_pem())).unwrap();
    let config = client_config(&stranger, &stranger_key, &both, &control, &[b"h2"]).unwrap();
    let _ = tls_client(port.addr, config).await;

    let mut plain = TcpStream::connect(port.addr).await.unwrap();
    plain.write_all(b"PRI").await.unwrap();
    let conn = port.next().await;
    assert!(!conn.peer.tls, "only the plaintext client is served");
    // The stranger's refusal is counted when the server has read its certificate.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while port.count("failed") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stranger is counted as failed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn without_a_ca_every_connection_is_plaintext() {
    let mut port = port(None).await;
    let _client = TcpStream::connect(port.addr).await.unwrap();
    let conn = port.next().await;
    assert_eq!(conn.peer.security(), "plaintext");
}
