//! The development PKI: a national CA, and per province a node and a bureau certificate, plus
//! the monitor's, written as PEM files in a fixed layout.
//!
//! Production certificates come from a real CA; this is for development, tests and demos, but
//! it produces the same shape (SAN names, EKUs, explicit validity) the node checks.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use exchange_core::Province;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::error::PkiError;
use crate::identity::{PeerCertificate, PeerIdentity};
use crate::load::{KEY_FILE_MODE, read_pem_file};

/// Common name of the development CA.
pub const DEV_CA_COMMON_NAME: &str = "exchange development national CA";
/// Longest validity accepted for a certificate made here, in days (about 10 years).
pub const VALIDITY_DAYS_MAX: i64 = 3660;
const SECONDS_PER_DAY: i64 = 86_400;

/// When certificates are valid: explicit instants, never an implicit default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Validity {
    /// Refuses an empty or inverted interval and one longer than [`VALIDITY_DAYS_MAX`].
    pub fn new(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Validity, PkiError> {
        if not_after <= not_before {
            return Err(PkiError::Validity(format!(
                "not_after {not_after} is not after not_before {not_before}"
            )));
        }
        let seconds = not_after.unix_timestamp().saturating_sub(not_before.unix_timestamp());
        let days = seconds.checked_div(SECONDS_PER_DAY).unwrap_or(i64::MAX);
        if days > VALIDITY_DAYS_MAX {
            return Err(PkiError::Validity(format!(
                "{days} days is longer than the {VALIDITY_DAYS_MAX} days allowed"
            )));
        }
        Ok(Validity { not_before, not_after })
    }

    /// Valid from one hour before `now` (so that small clock skew between machines does not
    /// make a fresh certificate "not yet valid") for `days` days.
    pub fn days_from(now: OffsetDateTime, days: u32) -> Result<Validity, PkiError> {
        // Checked: the time crate's `+`/`-` panic when a date leaves its range.
        let out_of_range = || PkiError::Validity(format!("{days} days from {now} is out of range"));
        Validity::new(
            now.checked_sub(time::Duration::hours(1)).ok_or_else(out_of_range)?,
            now.checked_add(time::Duration::days(i64::from(days)))
                .ok_or_else(out_of_range)?,
        )
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

/// Whether `init_dev_pki` may replace an existing CA (and with it every certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingCa {
    Refuse,
    Overwrite,
}

/// A certificate file and its key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertKeyPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files of one province.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvinceFiles {
    pub province: Province,
    pub node: CertKeyPaths,
    pub bureau: CertKeyPaths,
}

/// Where everything is: `DIR/ca.pem`, `DIR/ca.key`, `DIR/<code>/node.pem`, `node.key`,
/// `bureau.pem`, `bureau.key`, `DIR/monitor.pem`, `DIR/monitor.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiLayout {
    pub dir: PathBuf,
    pub ca: CertKeyPaths,
    pub provinces: Vec<ProvinceFiles>,
    pub monitor: CertKeyPaths,
}

impl PkiLayout {
    /// The layout under `dir` for these provinces (paths only; nothing is read or written).
    pub fn at(dir: &Path, provinces: &[Province]) -> PkiLayout {
        let unique: BTreeSet<Province> = provinces.iter().copied().collect();
        PkiLayout {
            dir: dir.to_path_buf(),
            ca: PkiLayout::ca_paths(dir),
            provinces: unique
                .into_iter()
                .map(|province| ProvinceFiles {
                    province,
                    node: PkiLayout::paths_of(dir, PeerIdentity::Node(province)),
                    bureau: PkiLayout::paths_of(dir, PeerIdentity::Bureau(province)),
                })
                .collect(),
            monitor: PkiLayout::paths_of(dir, PeerIdentity::Monitor),
        }
    }

    pub fn ca_paths(dir: &Path) -> CertKeyPaths {
        CertKeyPaths {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        }
    }

    /// Where the certificate and key of an identity live under `dir`.
    pub fn paths_of(dir: &Path, identity: PeerIdentity) -> CertKeyPaths {
        let (folder, stem) = match identity {
            PeerIdentity::Node(province) => (dir.join(province.to_string()), "node"),
            PeerIdentity::Bureau(province) => (dir.join(province.to_string()), "bureau"),
            PeerIdentity::Monitor => (dir.to_path_buf(), "monitor"),
        };
        CertKeyPaths {
            cert: folder.join(format!("{stem}.pem")),
            key: folder.join(format!("{stem}.key")),
        }
    }

    pub fn province(&self, province: Province) -> Option<&ProvinceFiles> {
        self.provinces.iter().find(|files| files.province == province)
    }
}

/// A CA able to sign leaves. Its `Debug` shows the certificate's subject only, never the key.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("common_name", &DEV_CA_COMMON_NAME)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new self-signed CA.
    pub fn generate(validity: Validity) -> Result<DevCa, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, DEV_CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let certified = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let cert_pem = certified.pem();
        let key_pem = certified.key().serialize_pem();
        // Re-reading our own PEM gives a plain `Issuer` that owns its key, the same way a CA
        // loaded from disk does, so both paths sign through one type.
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem)?)?;
        Ok(DevCa { issuer, cert_pem })
    }

    /// The CA stored at `paths` (the key file must be private, as for any key).
    pub fn load(paths: &CertKeyPaths) -> Result<DevCa, PkiError> {
        let cert_pem = read_pem_file(&paths.cert, false)?;
        let key_pem = read_pem_file(&paths.key, true)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| PkiError::NoPrivateKey {
            path: paths.key.clone(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(DevCa { issuer, cert_pem })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA's certificate and key (key file mode 0600).
    pub fn write(&self, paths: &CertKeyPaths) -> Result<(), PkiError> {
        write_public_file(&paths.cert, self.cert_pem.as_bytes())?;
        write_key_file(&paths.key, self.issuer.key().serialize_pem().as_bytes())
    }

    /// Signs a certificate for `identity`: SAN = its DNS name; nodes get server and client
    /// authentication, bureaus and the monitor client authentication only.
    pub fn issue(&self, identity: PeerIdentity, validity: Validity) -> Result<IssuedCertificate, PkiError> {
        let name = identity.dns_name();
        let mut params = CertificateParams::new(vec![name.clone()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match identity {
            PeerIdentity::Node(_) => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            PeerIdentity::Bureau(_) | PeerIdentity::Monitor => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        let parsed = PeerCertificate::parse(certificate.der())?;
        Ok(IssuedCertificate {
            identity,
            serial_hex: parsed.serial_hex,
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A freshly signed certificate and its key. `Debug` leaves the key out.
#[derive(Clone)]
pub struct IssuedCertificate {
    pub identity: PeerIdentity,
    /// Normalised hex serial, for revocation lists.
    pub serial_hex: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("identity", &self.identity)
            .field("serial_hex", &self.serial_hex)
            .finish_non_exhaustive()
    }
}

impl IssuedCertificate {
    /// Writes the certificate and key (key file mode 0600).
    pub fn write(&self, paths: &CertKeyPaths) -> Result<(), PkiError> {
        write_public_file(&paths.cert, self.cert_pem.as_bytes())?;
        write_key_file(&paths.key, self.key_pem.as_bytes())
    }
}

/// `exchange certs init`: a new development CA and every certificate for `provinces` and the
/// monitor, written under `out_dir` in the [`PkiLayout`]. An existing CA is kept (and this
/// fails) unless `existing` is [`ExistingCa::Overwrite`]: replacing it silently would cut off
/// every node still holding certificates from the old one.
pub fn init_dev_pki(
    out_dir: &Path,
    provinces: &[Province],
    validity: Validity,
    existing: ExistingCa,
) -> Result<PkiLayout, PkiError> {
    if provinces.is_empty() {
        return Err(PkiError::NoProvinces);
    }
    let layout = PkiLayout::at(out_dir, provinces);
    if existing == ExistingCa::Refuse {
        for path in [&layout.ca.cert, &layout.ca.key] {
            if path.exists() {
                return Err(PkiError::CaExists { path: path.clone() });
            }
        }
    }
    std::fs::create_dir_all(out_dir).map_err(PkiError::io(out_dir))?;
    let ca = DevCa::generate(validity)?;
    ca.write(&layout.ca)?;
    for files in &layout.provinces {
        let dir = out_dir.join(files.province.to_string());
        std::fs::create_dir_all(&dir).map_err(PkiError::io(&dir))?;
        ca.issue(PeerIdentity::Node(files.province), validity)?
            .write(&files.node)?;
        ca.issue(PeerIdentity::Bureau(files.province), validity)?
            .write(&files.bureau)?;
    }
    ca.issue(PeerIdentity::Monitor, validity)?.write(&layout.monitor)?;
    Ok(layout)
}

fn write_public_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(PkiError::io(path))
}

/// Writes a key so that it is never readable by others, not even for a moment: the file is
/// created with mode 0600, and an existing file is narrowed to 0600 before it is rewritten.
fn write_key_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(KEY_FILE_MODE);
    }
    let mut file = options.open(path).map_err(PkiError::io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(KEY_FILE_MODE))
            .map_err(PkiError::io(path))?;
    }
    file.set_len(0).map_err(PkiError::io(path))?;
    file.write_all(contents).map_err(PkiError::io(path))?;
    file.sync_all().map_err(PkiError::io(path))
}
