//! Real handshakes: tokio-rustls on loopback, each side with a configuration from this module.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use rustls::ProtocolVersion;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::ca::Issuer;
use crate::testkit::{DAY, bundle_of, ca, id, sidekiq, web, workload, workload_at};
use crate::verify::peer_identity;

/// What one side saw: the peer's identity, the protocol version and ALPN, or the error.
#[derive(Debug)]
struct Seen {
    peer: Option<SpiffeId>,
    version: Option<ProtocolVersion>,
    alpn: Option<Vec<u8>>,
}

/// One connection on loopback: the server accepts, sends "hello" and closes; the client
/// connects and reads to the end. Each side's result says what it saw or how it failed.
async fn connect(
    server: ServerConfig,
    client: ClientConfig,
) -> (Result<Seen, String>, Result<Seen, String>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, connection) = tls.get_ref();
        let seen = Seen {
            peer: peer_identity(connection),
            version: connection.protocol_version(),
            alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
        };
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(seen)
    });
    let client_side = async {
        let tcp = TcpStream::connect(address).await.unwrap();
        let loopback = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(loopback, tcp)
            .await
            .map_err(|e| e.to_string())?;
        // In TLS 1.3 a client's handshake ends before the server has checked the client's
        // certificate; a refusal arrives as an alert on the first read.
        let mut received = Vec::new();
        tls.read_to_end(&mut received)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(received, b"hello");
        let (_, connection) = tls.get_ref();
        Ok(Seen {
            peer: peer_identity(connection),
            version: connection.protocol_version(),
            alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
        })
    };
    let bound = Duration::from_secs(10);
    let client = tokio::time::timeout(bound, client_side)
        .await
        .expect("client within 10 s");
    let server = tokio::time::timeout(bound, server_side)
        .await
        .expect("server within 10 s")
        .unwrap();
    (server, client)
}

const H2: &[&[u8]] = &[b"h2"];

fn server_of(issuer: &Issuer, who: &SpiffeId, bundle: &TrustBundle) -> ServerConfig {
    let (leaf, key) = workload(issuer, who);
    server_config(&leaf, &key, bundle, H2).unwrap()
}

fn client_of(
    issuer: &Issuer,
    who: &SpiffeId,
    bundle: &TrustBundle,
    expects: &SpiffeId,
) -> ClientConfig {
    let (leaf, key) = workload(issuer, who);
    client_config(&leaf, &key, bundle, expects, H2).unwrap()
}

#[tokio::test]
async fn matching_identities_connect_over_tls13_and_each_side_sees_the_other() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let (server, client) = connect(
        server_of(&issuer, &web(), &bundle),
        client_of(&issuer, &sidekiq(), &bundle, &web()),
    )
    .await;
    let (server, client) = (server.unwrap(), client.unwrap());
    assert_eq!(server.peer, Some(sidekiq()), "the server sees the client");
    assert_eq!(client.peer, Some(web()), "the client sees the server");
    for side in [&server, &client] {
        assert_eq!(side.version, Some(ProtocolVersion::TLSv1_3));
        assert_eq!(side.alpn.as_deref(), Some(&b"h2"[..]));
    }
}

#[tokio::test]
async fn a_server_with_another_identity_than_expected_is_refused_naming_both() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let streaming = id("spiffe://cluster.local/ns/mastodon/sa/streaming");
    let (server, client) = connect(
        server_of(&issuer, &web(), &bundle),
        client_of(&issuer, &sidekiq(), &bundle, &streaming),
    )
    .await;
    let client = client.unwrap_err();
    assert!(
        client.contains(
            "the server is spiffe://cluster.local/ns/mastodon/sa/web, \
             not the expected spiffe://cluster.local/ns/mastodon/sa/streaming"
        ),
        "{client}"
    );
    let server = server.unwrap_err();
    assert!(server.contains("CertificateUnknown"), "{server}");
}

#[tokio::test]
async fn a_leaf_from_another_ca_is_refused_on_either_side() {
    let (trusted, stranger) = (ca(), ca());
    let bundle = bundle_of(&[&trusted]);

    let (_, client) = connect(
        server_of(&stranger, &web(), &bundle),
        client_of(&trusted, &sidekiq(), &bundle, &web()),
    )
    .await;
    assert!(client.unwrap_err().contains("UnknownIssuer"));

    let (server, client) = connect(
        server_of(&trusted, &web(), &bundle),
        client_of(&stranger, &sidekiq(), &bundle, &web()),
    )
    .await;
    assert!(server.unwrap_err().contains("UnknownIssuer"));
    assert!(client.is_err(), "the client learns of it by alert");
}

#[tokio::test]
async fn an_expired_leaf_is_refused_on_either_side() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let long_ago = SystemTime::now() - 2 * DAY;
    let expired = |who: &SpiffeId| workload_at(&issuer, who, Duration::from_secs(3600), long_ago);

    let (leaf, key) = expired(&web());
    let (_, client) = connect(
        server_config(&leaf, &key, &bundle, H2).unwrap(),
        client_of(&issuer, &sidekiq(), &bundle, &web()),
    )
    .await;
    assert!(client.unwrap_err().contains("certificate expired"));

    let (leaf, key) = expired(&sidekiq());
    let (server, client) = connect(
        server_of(&issuer, &web(), &bundle),
        client_config(&leaf, &key, &bundle, &web(), H2).unwrap(),
    )
    .await;
    assert!(server.unwrap_err().contains("certificate expired"));
    assert!(client.is_err());
}

#[tokio::test]
async fn during_a_root_rotation_leaves_of_old_and_new_roots_connect() {
    let (old, new) = (ca(), ca());
    let both = bundle_of(&[&old, &new]);
    for (server_root, client_root) in [(&old, &new), (&new, &old)] {
        let (server, client) = connect(
            server_of(server_root, &web(), &both),
            client_of(client_root, &sidekiq(), &both, &web()),
        )
        .await;
        assert_eq!(server.unwrap().peer, Some(sidekiq()));
        assert_eq!(client.unwrap().peer, Some(web()));
    }
}

#[tokio::test]
async fn a_tls12_only_client_is_refused() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let (leaf, key) = workload(&issuer, &sidekiq());
    let tls12 = ClientConfig::builder_with_provider(Arc::new(crate::verify::provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            crate::verify::SpiffeServerVerifier::new(&bundle, web()).unwrap(),
        ))
        .with_client_auth_cert(leaf.chain(), key.private_key_der())
        .unwrap();
    let (server, client) = connect(server_of(&issuer, &web(), &bundle), tls12).await;
    let server = server.unwrap_err();
    assert!(server.contains("peer is incompatible"), "{server}");
    let client = client.unwrap_err();
    assert!(client.contains("ProtocolVersion"), "{client}");
}

#[tokio::test]
async fn the_verifiers_refuse_tls12_even_where_a_configuration_allows_it() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let (leaf, key) = workload(&issuer, &web());
    let server = ServerConfig::builder_with_provider(Arc::new(crate::verify::provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_client_cert_verifier(Arc::new(
            crate::verify::SpiffeClientVerifier::new(&bundle).unwrap(),
        ))
        .with_single_cert(leaf.chain(), key.private_key_der())
        .unwrap();
    let (leaf, key) = workload(&issuer, &sidekiq());
    let client = ClientConfig::builder_with_provider(Arc::new(crate::verify::provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            crate::verify::SpiffeServerVerifier::new(&bundle, web()).unwrap(),
        ))
        .with_client_auth_cert(leaf.chain(), key.private_key_der())
        .unwrap();
    let (_, client) = connect(server, client).await;
    let client = client.unwrap_err();
    assert!(client.contains("TLS 1.3 only"), "{client}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let anonymous = anonymous_client_config(&bundle, &web(), H2).unwrap();
    let (server, client) = connect(server_of(&issuer, &web(), &bundle), anonymous).await;
    let server = server.unwrap_err();
    assert!(server.contains("peer sent no certificates"), "{server}");
    assert!(client.is_err());
}

#[test]
fn a_configuration_with_a_key_that_is_not_the_leafs_is_refused() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let (leaf, _) = workload(&issuer, &web());
    let other = Keypair::generate().unwrap();
    assert!(matches!(
        client_config(&leaf, &other, &bundle, &web(), H2),
        Err(TlsConfigError::KeyMismatch(who)) if who == web()
    ));
    assert!(matches!(
        server_config(&leaf, &other, &bundle, H2),
        Err(TlsConfigError::KeyMismatch(_))
    ));
    let (leaf, key) = workload(&issuer, &web());
    assert!(matches!(
        server_config(&leaf, &key, &TrustBundle::default(), H2),
        Err(TlsConfigError::Verifier(_))
    ));
}

#[tokio::test]
async fn the_control_planes_ports_take_a_client_without_a_certificate_and_check_one_with() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let control = id("spiffe://cluster.local/ns/herd/sa/herd-control");
    let (leaf, key) = workload(&issuer, &control);
    let service = || service_server_config(&leaf, &key, &bundle, H2).unwrap();

    // A proxy before its first certificate: the server is authenticated, the client is not.
    let anonymous = anonymous_client_config(&bundle, &control, H2).unwrap();
    let (server, client) = connect(service(), anonymous).await;
    assert_eq!(server.unwrap().peer, None);
    assert_eq!(client.unwrap().peer, Some(control.clone()));

    // A certified proxy: both sides see each other.
    let (server, client) = connect(service(), client_of(&issuer, &web(), &bundle, &control)).await;
    assert_eq!(server.unwrap().peer, Some(web()));
    assert_eq!(client.unwrap().peer, Some(control.clone()));

    // A client certificate from another CA is refused, not taken as anonymous.
    let other = ca();
    let stranger = client_of(&other, &web(), &bundle_of(&[&issuer, &other]), &control);
    let (server, _) = connect(service(), stranger).await;
    assert!(server.is_err(), "{server:?}");

    // And the anonymous client still insists on the server's identity.
    let anonymous = anonymous_client_config(&bundle, &sidekiq(), H2).unwrap();
    let (_, client) = connect(service(), anonymous).await;
    let client = client.unwrap_err();
    assert!(client.contains(sidekiq().as_str()), "{client}");
}
