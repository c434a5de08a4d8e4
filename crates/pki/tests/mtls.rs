//! Mutual TLS end to end on 127.0.0.1: a generated PKI, a tiny tonic server (gRPC health with
//! an interceptor that parses the client's identity), and clients that should and should not
//! get through.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use exchange_core::Province;
use exchange_pki::time::OffsetDateTime;
use exchange_pki::{
    DevCa, ExistingCa, IdentityError, PeerIdentity, PkiError, PkiLayout, RevocationList, Validity, client_tls_config,
    init_dev_pki, install_crypto_provider, load_ca, load_identity, node_dns_name, peer_identity,
    peer_identity_of_request, server_tls_config,
};
use tokio::sync::oneshot;
use tonic::transport::{Channel, ClientTlsConfig, Server};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

fn beijing() -> Province {
    "110000".parse().unwrap()
}

fn chongqing() -> Province {
    "500000".parse().unwrap()
}

fn validity() -> Validity {
    Validity::days_from(OffsetDateTime::now_utc(), 30).unwrap()
}

fn pki(dir: &Path) -> PkiLayout {
    init_dev_pki(dir, &[beijing(), chongqing()], validity(), ExistingCa::Refuse).unwrap()
}

type Seen = Arc<Mutex<Vec<Result<PeerIdentity, IdentityError>>>>;

struct TestServer {
    address: std::net::SocketAddr,
    seen: Seen,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The node of `province` serving gRPC health over mutual TLS; every call's parsed client
/// identity is recorded, and a call without a valid identity is refused.
async fn start_node(layout: &PkiLayout, province: Province) -> TestServer {
    install_crypto_provider();
    let files = layout.province(province).unwrap();
    let tls = server_tls_config(
        load_identity(&files.node.cert, &files.node.key).unwrap(),
        load_ca(&layout.ca.cert).unwrap(),
    );
    let (reporter, _) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let service = HealthServer::with_interceptor(
        HealthService::from_health_reporter(reporter),
        move |request: Request<()>| {
            let identity = peer_identity_of_request(&request, &RevocationList::new(), SystemTime::now());
            recorder.lock().unwrap().push(identity.clone());
            identity.map(|_| request).map_err(Status::from)
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop.await;
            },
        );
    tokio::spawn(server);
    TestServer {
        address,
        seen,
        shutdown: Some(shutdown),
    }
}

/// One health check through `tls`; any failure (handshake or call) is an `Err`.
async fn call(address: std::net::SocketAddr, tls: ClientTlsConfig) -> Result<(), Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_node_of_another_province_connects_and_is_identified() {
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let server = start_node(&layout, chongqing()).await;
    let beijing_files = layout.province(beijing()).unwrap();
    let tls = client_tls_config(
        load_identity(&beijing_files.node.cert, &beijing_files.node.key).unwrap(),
        load_ca(&layout.ca.cert).unwrap(),
        chongqing(),
    );
    call(server.address, tls).await.unwrap();
    assert_eq!(*server.seen.lock().unwrap(), vec![Ok(PeerIdentity::Node(beijing()))]);

    // The bureau of the server's own province is identified as such.
    let chongqing_files = layout.province(chongqing()).unwrap();
    let tls = client_tls_config(
        load_identity(&chongqing_files.bureau.cert, &chongqing_files.bureau.key).unwrap(),
        load_ca(&layout.ca.cert).unwrap(),
        chongqing(),
    );
    call(server.address, tls).await.unwrap();
    assert_eq!(
        server.seen.lock().unwrap().last(),
        Some(&Ok(PeerIdentity::Bureau(chongqing())))
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_on_its_first_call() {
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let server = start_node(&layout, chongqing()).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(load_ca(&layout.ca.cert).unwrap())
        .domain_name(node_dns_name(chongqing()));
    assert!(call(server.address, tls).await.is_err());
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "the handshake must fail before any handler runs"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let other = pki(other_dir.path());
    let server = start_node(&layout, chongqing()).await;
    let impostor = other.province(beijing()).unwrap();
    // It trusts the right CA, so only its own certificate can fail it.
    let tls = client_tls_config(
        load_identity(&impostor.node.cert, &impostor.node.key).unwrap(),
        load_ca(&layout.ca.cert).unwrap(),
        chongqing(),
    );
    assert!(call(server.address, tls).await.is_err());
    assert!(server.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_certificate_is_refused_by_the_handshake_and_by_identity_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let server = start_node(&layout, chongqing()).await;
    let ca = DevCa::load(&layout.ca).unwrap();
    let now = OffsetDateTime::now_utc();
    let past = Validity::new(now - time_days(30), now - time_days(1)).unwrap();
    let expired = ca.issue(PeerIdentity::Node(beijing()), past).unwrap();
    let expired_der = pem_to_der(&expired.cert_pem);
    assert!(matches!(
        peer_identity(&expired_der, &RevocationList::new(), SystemTime::now()),
        Err(IdentityError::Expired { .. })
    ));
    let paths = PkiLayout::paths_of(&dir.path().join("expired"), PeerIdentity::Node(beijing()));
    std::fs::create_dir_all(paths.cert.parent().unwrap()).unwrap();
    expired.write(&paths).unwrap();
    let tls = client_tls_config(
        load_identity(&paths.cert, &paths.key).unwrap(),
        load_ca(&layout.ca.cert).unwrap(),
        chongqing(),
    );
    assert!(call(server.address, tls).await.is_err());

    let future = Validity::new(now + time_days(1), now + time_days(30)).unwrap();
    let early = ca.issue(PeerIdentity::Monitor, future).unwrap();
    assert!(matches!(
        peer_identity(&pem_to_der(&early.cert_pem), &RevocationList::new(), SystemTime::now()),
        Err(IdentityError::NotYetValid { .. })
    ));
}

#[tokio::test]
async fn a_not_yet_valid_certificate_is_refused_by_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let server = start_node(&layout, chongqing()).await;
    let ca = DevCa::load(&layout.ca).unwrap();
    let now = OffsetDateTime::now_utc();
    let future = Validity::new(now + time_days(1), now + time_days(30)).unwrap();
    let early = ca.issue(PeerIdentity::Bureau(chongqing()), future).unwrap();
    let paths = PkiLayout::paths_of(&dir.path().join("early"), PeerIdentity::Bureau(chongqing()));
    std::fs::create_dir_all(paths.cert.parent().unwrap()).unwrap();
    early.write(&paths).unwrap();
    let tls = client_tls_config(
        load_identity(&paths.cert, &paths.key).unwrap(),
        load_ca(&layout.ca.cert).unwrap(),
        chongqing(),
    );
    assert!(call(server.address, tls).await.is_err());
    assert!(server.seen.lock().unwrap().is_empty(), "refused before any handler ran");
}

/// Keys never show in `Debug` output or in errors: the CA, an issued certificate, and the
/// error of a key file that does not parse (which must not quote it).
#[test]
fn debug_output_and_errors_never_hold_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let ca = DevCa::load(&layout.ca).unwrap();
    let issued = ca.issue(PeerIdentity::Node(beijing()), validity()).unwrap();
    let key_body: Vec<&str> = issued
        .key_pem
        .lines()
        .filter(|line| !line.starts_with("-----") && !line.is_empty())
        .collect();
    assert!(!key_body.is_empty());
    for text in [format!("{ca:?}"), format!("{issued:?}"), format!("{issued:#?}")] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        for line in &key_body {
            assert!(!text.contains(line), "{text}");
        }
    }
    // A key file whose body is damaged: the error names the file, never its contents.
    let node = &layout.province(beijing()).unwrap().node;
    let pem = std::fs::read_to_string(&node.key).unwrap();
    let first_line = pem.lines().nth(1).unwrap();
    let damaged = pem.replacen(first_line, &"*".repeat(first_line.len()), 1);
    std::fs::write(&node.key, &damaged).unwrap();
    let error = load_identity(&node.cert, &node.key).unwrap_err();
    assert!(matches!(error, PkiError::NoPrivateKey { .. }), "{error}");
    let text = format!("{error} {error:?}");
    assert!(text.contains(&node.key.display().to_string()), "{text}");
    for line in damaged
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() > 8)
    {
        assert!(!text.contains(line), "{text}");
    }
}

#[test]
fn a_revoked_serial_is_refused_by_identity_parsing() {
    let ca = DevCa::generate(validity()).unwrap();
    let issued = ca.issue(PeerIdentity::Node(beijing()), validity()).unwrap();
    let other = ca.issue(PeerIdentity::Node(chongqing()), validity()).unwrap();
    let der = pem_to_der(&issued.cert_pem);
    let revocations = RevocationList::from_hex_serials([issued.serial_hex.to_uppercase()]).unwrap();
    assert_eq!(
        peer_identity(&der, &revocations, SystemTime::now()),
        Err(IdentityError::Revoked {
            serial: issued.serial_hex.clone()
        })
    );
    assert_eq!(
        peer_identity(&pem_to_der(&other.cert_pem), &revocations, SystemTime::now()),
        Ok(PeerIdentity::Node(chongqing()))
    );
}

/// Remembering a parsed certificate must not remember the verdict: a certificate revoked after
/// it was first seen is refused on its next request.
#[test]
fn a_remembered_certificate_is_still_checked_for_revocation() {
    let ca = DevCa::generate(validity()).unwrap();
    let issued = ca.issue(PeerIdentity::Node(beijing()), validity()).unwrap();
    let der = pem_to_der(&issued.cert_pem);
    let parsed = exchange_pki::ParsedCertificates::default();
    let first = parsed.parse(&der).unwrap();
    assert_eq!(parsed.parse(&der).unwrap(), first);
    assert_eq!(
        first.check(&RevocationList::default(), SystemTime::now()),
        Ok(PeerIdentity::Node(beijing()))
    );
    let revoked = RevocationList::from_hex_serials([issued.serial_hex.clone()]).unwrap();
    assert_eq!(
        parsed.parse(&der).unwrap().check(&revoked, SystemTime::now()),
        Err(IdentityError::Revoked {
            serial: issued.serial_hex.clone()
        })
    );
    // Garbage is refused every time, never remembered as anything.
    for _ in 0..2 {
        assert!(matches!(
            parsed.parse(b"not a certificate"),
            Err(IdentityError::Malformed(_))
        ));
    }
}

#[test]
fn key_files_are_private_and_an_open_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let node = &layout.province(beijing()).unwrap().node;
    for key in [&layout.ca.key, &node.key, &layout.monitor.key] {
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            key.display()
        );
    }
    std::fs::set_permissions(&node.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = load_identity(&node.cert, &node.key).unwrap_err();
    assert!(matches!(error, PkiError::KeyFileTooOpen { mode: 0o644, .. }), "{error}");
    assert!(error.to_string().contains("chmod 600"));
}

#[test]
fn init_refuses_to_overwrite_a_ca_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let first_ca = std::fs::read_to_string(&layout.ca.cert).unwrap();
    let error = init_dev_pki(dir.path(), &[beijing()], validity(), ExistingCa::Refuse).unwrap_err();
    assert!(matches!(error, PkiError::CaExists { .. }), "{error}");
    assert_eq!(std::fs::read_to_string(&layout.ca.cert).unwrap(), first_ca);
    init_dev_pki(dir.path(), &[beijing()], validity(), ExistingCa::Overwrite).unwrap();
    assert_ne!(std::fs::read_to_string(&layout.ca.cert).unwrap(), first_ca);
}

#[test]
fn every_generated_certificate_names_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let layout = pki(dir.path());
    let mut expected = vec![(layout.monitor.cert.clone(), PeerIdentity::Monitor)];
    for files in &layout.provinces {
        expected.push((files.node.cert.clone(), PeerIdentity::Node(files.province)));
        expected.push((files.bureau.cert.clone(), PeerIdentity::Bureau(files.province)));
    }
    for (path, identity) in expected {
        let parsed = exchange_pki::load_own_certificate(&path).unwrap();
        assert_eq!(parsed.identity, identity);
    }
    assert_eq!(
        dir.path().join("500000/node.pem"),
        layout.province(chongqing()).unwrap().node.cert
    );
}

fn time_days(days: i64) -> exchange_pki::time::Duration {
    exchange_pki::time::Duration::days(days)
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}
