//! Loading certificates and keys from PEM files, and the TLS configurations built from them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use exchange_core::Province;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::PkiError;
use crate::identity::{PeerCertificate, node_dns_name};

/// Mode of key files written here: owner read/write only.
pub const KEY_FILE_MODE: u32 = 0o600;
/// Permission bits a key file must not have: anything for group or others.
pub const KEY_FILE_FORBIDDEN_MODE_BITS: u32 = 0o077;
/// Largest PEM file read, in bytes; a certificate chain is a few kilobytes.
pub const PEM_FILE_LEN_MAX: u64 = 1024 * 1024;
/// How long a TLS handshake may take before the server drops the connection, so a client
/// that connects and stalls cannot hold a slot.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses a key file that group or others may read or write.
pub fn check_key_file_permissions(path: &Path) -> Result<(), PkiError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(PkiError::io(path))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & KEY_FILE_FORBIDDEN_MODE_BITS != 0 {
            return Err(PkiError::KeyFileTooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// Reads a PEM file of bounded size; key files are checked for their permissions first, so a
/// key left open is refused before it is even read.
pub(crate) fn read_pem_file(path: &Path, is_key: bool) -> Result<String, PkiError> {
    if is_key {
        check_key_file_permissions(path)?;
    }
    let len = std::fs::metadata(path).map_err(PkiError::io(path))?.len();
    if len > PEM_FILE_LEN_MAX {
        return Err(PkiError::FileTooLarge {
            path: path.to_path_buf(),
            len,
            max: PEM_FILE_LEN_MAX,
        });
    }
    std::fs::read_to_string(path).map_err(PkiError::io(path))
}

fn certificates_of(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|error| PkiError::NoCertificate {
            path: path.to_path_buf(),
            detail: format!(": {error}"),
        })?;
    if certificates.is_empty() {
        return Err(PkiError::NoCertificate {
            path: path.to_path_buf(),
            detail: String::new(),
        });
    }
    Ok(certificates)
}

fn check_private_key(path: &Path, pem: &str) -> Result<(), PkiError> {
    // The parser's error is dropped on purpose: it could quote part of the key.
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(drop)
        .map_err(|_| PkiError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

/// A certificate (chain, leaf first) and its private key, checked to parse, for a TLS server
/// or client. The key file must have no group or other permissions.
pub fn load_identity(cert_path: &Path, key_path: &Path) -> Result<Identity, PkiError> {
    let cert_pem = read_pem_file(cert_path, false)?;
    certificates_of(cert_path, &cert_pem)?;
    let key_pem = read_pem_file(key_path, true)?;
    check_private_key(key_path, &key_pem)?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

/// The CA certificate(s) peers must chain to.
pub fn load_ca(path: &Path) -> Result<Certificate, PkiError> {
    let pem = read_pem_file(path, false)?;
    certificates_of(path, &pem)?;
    Ok(Certificate::from_pem(pem))
}

/// What our own certificate says we are (a node checks it matches its configured province).
pub fn load_own_certificate(cert_path: &Path) -> Result<PeerCertificate, PkiError> {
    let pem = read_pem_file(cert_path, false)?;
    let certificates = certificates_of(cert_path, &pem)?;
    let leaf = certificates.first().ok_or_else(|| PkiError::NoCertificate {
        path: cert_path.to_path_buf(),
        detail: String::new(),
    })?;
    Ok(PeerCertificate::parse(leaf.as_ref())?)
}

/// A server that requires every client to present a certificate chaining to `ca`.
pub fn server_tls_config(identity: Identity, ca: Certificate) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(ca)
        .client_auth_optional(false)
        .timeout(TLS_HANDSHAKE_TIMEOUT)
}

/// A client that presents `identity`, trusts only `ca`, and expects the server to be the node
/// of `server_province` (`node.<code>.exchange`), whatever address it dials.
pub fn client_tls_config(identity: Identity, ca: Certificate, server_province: Province) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(ca)
        .identity(identity)
        .domain_name(node_dns_name(server_province))
}

/// The three files a TLS endpoint needs, as they appear in a node's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    pub fn server_tls_config(&self) -> Result<ServerTlsConfig, PkiError> {
        Ok(server_tls_config(
            load_identity(&self.cert, &self.key)?,
            load_ca(&self.ca)?,
        ))
    }

    pub fn client_tls_config(&self, server_province: Province) -> Result<ClientTlsConfig, PkiError> {
        Ok(client_tls_config(
            load_identity(&self.cert, &self.key)?,
            load_ca(&self.ca)?,
            server_province,
        ))
    }
}
