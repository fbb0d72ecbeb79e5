//! TLS for the tests: a certificate authority made by the test (rcgen) with a server
//! certificate for `localhost`/127.0.0.1 and a client certificate, written as PEM files; and a
//! TLS-terminating proxy (tokio-rustls) that forwards each connection to a plain TCP backend
//! (the webhook test's HTTP server, a Tansu broker: Tansu serves no TLS itself).
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and the certificates it signed, as PEM files in `dir`.
pub struct Pki {
    pub ca_file: PathBuf,
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    pub client_cert_file: PathBuf,
    /// Mode 0600.
    pub client_key_file: PathBuf,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl Pki {
    /// A new CA (named `name`) in `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let mut server_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server_params.distinguished_name.push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params.distinguished_name.push(DnType::CommonName, "exfilwatch");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

        let write = |file: &str, text: &str| {
            let p = dir.join(file);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        Pki {
            ca_file: write(&format!("{name}-ca.pem"), &ca.pem()),
            server_cert_file: write(&format!("{name}-server.pem"), &server.pem()),
            server_key_file: write(&format!("{name}-server-key.pem"), &server_key.serialize_pem()),
            client_cert_file: write(&format!("{name}-client.pem"), &client.pem()),
            client_key_file: write(&format!("{name}-client-key.pem"), &client_key.serialize_pem()),
            ca_der: ca.der().clone(),
            server_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }

    /// A rustls server configuration with the server certificate; `client_auth`: clients must
    /// present a certificate this CA signed.
    fn server_config(&self, client_auth: bool) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        builder.with_single_cert(vec![self.server_der.clone()], key).unwrap()
    }
}

/// Counts of what the proxy saw.
#[derive(Default)]
pub struct ProxyLog {
    /// TLS handshakes that succeeded.
    pub handshakes: usize,
    /// Handshakes that failed (a client that does not trust the CA, or shows no certificate).
    pub refused: usize,
}

/// A TLS-terminating proxy on 127.0.0.1 in front of a plain TCP `backend`, on its own runtime
/// thread. Stops when dropped.
pub struct TlsProxy {
    pub addr: SocketAddr,
    pub log: Arc<std::sync::Mutex<ProxyLog>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TlsProxy {
    pub fn start(pki: &Pki, backend: SocketAddr, client_auth: bool) -> TlsProxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(client_auth)));
        // Bound here (a std listener: the caller may be inside a runtime of its own).
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let log = Arc::new(std::sync::Mutex::new(ProxyLog::default()));
        let shared = Arc::clone(&log);
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            log.lock().unwrap().refused += 1;
                            return;
                        }
                    };
                    log.lock().unwrap().handshakes += 1;
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsProxy { addr, log, rt: Some(rt) }
    }

    pub fn handshakes(&self) -> usize {
        self.log.lock().unwrap().handshakes
    }

    pub fn refused(&self) -> usize {
        self.log.lock().unwrap().refused
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
