//! `PkiError`: what can go wrong generating, writing or loading certificates and keys.

use std::path::PathBuf;

use crate::identity::IdentityError;

/// Errors of this crate. None of them ever carries key material: key files are named by
/// path only, and parse failures of a key are reported without the parser's detail.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}: it must not be readable or writable by group or others \
         (run `chmod 600 {path}`)"
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    #[error("{path} already exists; refusing to overwrite the CA (pass force to replace the whole PKI)")]
    CaExists { path: PathBuf },
    #[error("{path} is {len} bytes; a PEM file here is at most {max} bytes")]
    FileTooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("{path} holds no PEM certificate{detail}")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey { path: PathBuf },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("validity is wrong: {0}")]
    Validity(String),
    #[error("no provinces given; a PKI needs at least one province node")]
    NoProvinces,
    #[error("serial number {serial:?} is not hex of at most {max_digits} digits")]
    BadSerial { serial: String, max_digits: usize },
    #[error("revocation list holds more than {max} serial numbers")]
    TooManyRevokedSerials { max: usize },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl PkiError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PkiError {
        let path = path.into();
        move |source| PkiError::Io { path, source }
    }
}
