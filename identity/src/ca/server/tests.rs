//! Server certificates: what they hold, and real handshakes with a client that checks names as
//! web clients (and the Kubernetes API server) do.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::pki_types::ServerName as TlsName;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;

use super::*;
use crate::svid;
use crate::testkit::{DAY, ca, intermediate_of};
use crate::tls::name_server_config;
use crate::verify::provider;

fn names(list: &[&str]) -> Vec<ServerName> {
    list.iter().map(|n| ServerName::parse(n).unwrap()).collect()
}

fn webhook() -> Vec<ServerName> {
    names(&["herd-control.herd.svc", "127.0.0.1", "::1"])
}

#[test]
fn names_parse_as_addresses_or_dns_names() {
    assert_eq!(
        ServerName::parse("127.0.0.1"),
        Ok(ServerName::Ip(Ipv4Addr::LOCALHOST.into()))
    );
    assert_eq!(
        ServerName::parse("::1"),
        Ok(ServerName::Ip(Ipv6Addr::LOCALHOST.into()))
    );
    assert_eq!(
        ServerName::parse("Herd-Control.herd.svc."),
        Ok(ServerName::Dns("herd-control.herd.svc".into()))
    );
    assert_eq!(
        ServerName::parse("localhost"),
        Ok(ServerName::Dns("localhost".into()))
    );
    assert_eq!(
        ServerName::parse("*.herd.svc"),
        Ok(ServerName::Dns("*.herd.svc".into()))
    );
    for bad in [
        "",
        "herd control",
        "-herd.svc",
        "herd-.svc",
        "herd..svc",
        "*.svc",
        "a.*.svc",
        "300.1.1.1",
        "https://herd.svc",
        "herd.svc:8443",
        &"a".repeat(64),
    ] {
        assert_eq!(
            ServerName::parse(bad),
            Err(ServerNameError::Invalid(bad.into())),
            "{bad:?}"
        );
    }
}

#[test]
fn a_server_certificate_names_its_dns_names_and_addresses_and_serves_only() {
    let issuer = ca();
    let key = Keypair::generate().unwrap();
    let cert = issuer.issue_server(&key, &webhook(), DAY).unwrap();
    assert_eq!(cert.names(), webhook().as_slice());
    assert_eq!(cert.chain().len(), 1, "a root's certificate is sent alone");

    let parsed = svid::parse(cert.certificate()).unwrap();
    assert!(!parsed.is_ca());
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "the subject is empty, so the SAN is critical");
    assert_eq!(
        san.value.general_names,
        vec![
            GeneralName::DNSName("herd-control.herd.svc"),
            GeneralName::IPAddress(&[127, 0, 0, 1]),
            GeneralName::IPAddress(&Ipv6Addr::LOCALHOST.octets()),
        ],
        "the names asked for and nothing else: no SPIFFE ID"
    );
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth && !eku.any);
    let usage = parsed.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && !usage.key_cert_sign());
    assert_eq!(
        svid::validity_in(&parsed),
        (cert.not_before(), cert.not_after())
    );
    // Not a workload: the mesh's own reader finds no SPIFFE ID in it.
    assert!(svid::identity_in(&parsed).is_err());
}

#[test]
fn a_server_certificate_follows_the_issuers_validity_rules() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600)).unwrap();
    let key = Keypair::generate().unwrap();
    let cert = issuer.issue_server(&key, &webhook(), DAY).unwrap();
    assert_eq!(
        cert.not_after(),
        issuer.not_after(),
        "cut at the issuer's end"
    );
    let later = issuer.not_after() + Duration::from_secs(1);
    assert!(matches!(
        issuer.issue_server_at(&key, &webhook(), DAY, later),
        Err(IssueError::IssuerExpired { .. })
    ));
    assert!(matches!(
        issuer.issue_server(&key, &webhook(), Duration::ZERO),
        Err(IssueError::ZeroLifetime)
    ));
    assert!(matches!(
        issuer.issue_server(&key, &[], DAY),
        Err(IssueError::NoServerNames)
    ));
}

#[test]
fn an_intermediate_issuer_sends_its_chain_with_a_server_certificate() {
    let root = ca();
    let (intermediate_pem, intermediate_key) = intermediate_of(&root);
    let issuer = Issuer::from_pem(&intermediate_pem, &intermediate_key).unwrap();
    let cert = issuer
        .issue_server(&Keypair::generate().unwrap(), &webhook(), DAY)
        .unwrap();
    assert_eq!(cert.chain().len(), 2);
    assert_eq!(&cert.chain()[1], issuer.certificate());
}

/// A client that checks the server's name against its certificate with webpki, trusting
/// `root` only: what Go's TLS client in the API server does with a webhook's `caBundle`.
fn web_client(root: &Issuer) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(root.certificate().clone()).unwrap();
    ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// One handshake on loopback, the client asking for `name`; the bytes the client read or its
/// error.
async fn handshake(
    server: ServerConfig,
    client: ClientConfig,
    name: &str,
) -> Result<String, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.shutdown().await;
        }
    });
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = TlsName::try_from(name.to_owned()).unwrap();
    let mut tls = TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut read = String::new();
    tls.read_to_string(&mut read)
        .await
        .map_err(|e| e.to_string())?;
    Ok(read)
}

#[tokio::test]
async fn a_client_that_checks_names_accepts_each_name_and_refuses_others() {
    let issuer = ca();
    let key = Keypair::generate().unwrap();
    let cert = issuer.issue_server(&key, &webhook(), DAY).unwrap();
    let server = || name_server_config(&cert, &key, &[]).unwrap();
    for name in ["herd-control.herd.svc", "127.0.0.1", "::1"] {
        assert_eq!(
            handshake(server(), web_client(&issuer), name).await,
            Ok("hello".into()),
            "{name}"
        );
    }
    for other in ["other.herd.svc", "127.0.0.2"] {
        let err = handshake(server(), web_client(&issuer), other)
            .await
            .unwrap_err();
        assert!(
            err.contains("certificate not valid for name"),
            "{other}: {err}"
        );
    }
    // Another CA's client does not trust it at all.
    let err = handshake(server(), web_client(&ca()), "127.0.0.1")
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_server_configuration_refuses_a_key_that_is_not_the_certificates() {
    let issuer = ca();
    let cert = issuer
        .issue_server(&Keypair::generate().unwrap(), &webhook(), DAY)
        .unwrap();
    let err = name_server_config(&cert, &Keypair::generate().unwrap(), &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("not the key of the server certificate for herd-control.herd.svc"),
        "{err}"
    );
}
