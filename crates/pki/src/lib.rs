//! Certificates and mutual TLS of the exchange: a development CA, loading keys safely, TLS
//! configurations for tonic, and the peer identity a client certificate proves.
//!
//! Architecture invariant: a peer's province comes from its verified certificate, never from
//! what it says in a message; the node decides what a peer may ask from [`PeerIdentity`].
//! Key material is never logged, printed or put in an error.

#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]

mod error;
mod generate;
mod identity;
mod load;

pub use error::PkiError;
pub use generate::{
    CertKeyPaths, DEV_CA_COMMON_NAME, DevCa, ExistingCa, IssuedCertificate, PkiLayout, ProvinceFiles,
    VALIDITY_DAYS_MAX, Validity, init_dev_pki,
};
pub use identity::{
    DNS_SUFFIX, IdentityError, PARSED_CERTIFICATES_MAX, ParsedCertificates, PeerCertificate, PeerIdentity,
    REVOKED_SERIALS_MAX, RevocationList, SERIAL_HEX_DIGITS_MAX, node_dns_name, normalize_serial_hex, peer_identity,
    peer_identity_of_request,
};
pub use load::{
    KEY_FILE_FORBIDDEN_MODE_BITS, KEY_FILE_MODE, PEM_FILE_LEN_MAX, TLS_HANDSHAKE_TIMEOUT, TlsFiles,
    check_key_file_permissions, client_tls_config, load_ca, load_identity, load_own_certificate, server_tls_config,
};
pub use time;

/// Installs rustls's ring crypto provider as the process default. Idempotent: a second call,
/// or a provider installed by someone else first, is fine. Call it before building any TLS
/// configuration: with more than one provider compiled in, rustls panics without a default.
pub fn install_crypto_provider() {
    // `Err` only means a default provider is already installed, which is what we want.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}
