//! Who a peer is, read from its certificate: node or bureau of a province, or the monitor.
//!
//! The name that counts is the certificate's DNS subject alternative name
//! (`node.500000.exchange`, `bureau.500000.exchange`, `monitor.exchange`); the common name is
//! ignored, because name-constrained verification (webpki) checks SANs, not CNs.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use exchange_core::Province;
use x509_parser::extensions::GeneralName;

use crate::error::PkiError;

/// The DNS suffix of every exchange identity.
pub const DNS_SUFFIX: &str = "exchange";
/// Longest serial number accepted, in hex digits (RFC 5280: at most 20 octets).
pub const SERIAL_HEX_DIGITS_MAX: usize = 40;
/// Most serial numbers one revocation list may hold; a list this long means the CA should be
/// replaced, not patched.
pub const REVOKED_SERIALS_MAX: usize = 100_000;

/// What a certificate says its holder is, and so what it may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerIdentity {
    /// A province node: serves the bureau and peers, and connects to other nodes.
    Node(Province),
    /// A province's bureau or hospital tool: a client of its own province's node only.
    Bureau(Province),
    /// The national monitor: reads every node's feed.
    Monitor,
}

impl PeerIdentity {
    /// The DNS name that a certificate of this identity carries as its SAN.
    pub fn dns_name(self) -> String {
        match self {
            PeerIdentity::Node(province) => format!("node.{province}.{DNS_SUFFIX}"),
            PeerIdentity::Bureau(province) => format!("bureau.{province}.{DNS_SUFFIX}"),
            PeerIdentity::Monitor => format!("monitor.{DNS_SUFFIX}"),
        }
    }

    /// The identity a DNS name stands for; `None` for names outside the exchange's scheme.
    /// DNS names compare case-insensitively.
    pub fn from_dns_name(name: &str) -> Option<PeerIdentity> {
        let name = name.to_ascii_lowercase();
        let parts: Vec<&str> = name.split('.').collect();
        match parts.as_slice() {
            ["monitor", suffix] if *suffix == DNS_SUFFIX => Some(PeerIdentity::Monitor),
            [role, code, suffix] if *suffix == DNS_SUFFIX => {
                let province: Province = code.parse().ok()?;
                match *role {
                    "node" => Some(PeerIdentity::Node(province)),
                    "bureau" => Some(PeerIdentity::Bureau(province)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    pub fn province(self) -> Option<Province> {
        match self {
            PeerIdentity::Node(province) | PeerIdentity::Bureau(province) => Some(province),
            PeerIdentity::Monitor => None,
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dns_name())
    }
}

/// The name a client verifies a province node's server certificate against.
pub fn node_dns_name(province: Province) -> String {
    PeerIdentity::Node(province).dns_name()
}

/// Why a peer's certificate does not give an identity this node accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the peer presented no client certificate")]
    NoCertificate,
    #[error("the peer certificate cannot be parsed: {0}")]
    Malformed(String),
    #[error("the peer certificate names no exchange identity (DNS names: {names:?})")]
    NoExchangeName { names: Vec<String> },
    #[error("the peer certificate names several exchange identities ({names:?}); it must name one")]
    Ambiguous { names: Vec<String> },
    #[error("the peer certificate (serial {serial}) is revoked")]
    Revoked { serial: String },
    #[error("the peer certificate expired at {not_after_unix_s} (Unix seconds)")]
    Expired { not_after_unix_s: i64 },
    #[error("the peer certificate is not valid before {not_before_unix_s} (Unix seconds)")]
    NotYetValid { not_before_unix_s: i64 },
}

impl From<IdentityError> for tonic::Status {
    fn from(error: IdentityError) -> tonic::Status {
        tonic::Status::unauthenticated(error.to_string())
    }
}

/// What this crate reads from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    pub identity: PeerIdentity,
    /// Normalised serial number: lower-case hex without leading zeros.
    pub serial_hex: String,
    pub not_before_unix_s: i64,
    pub not_after_unix_s: i64,
}

impl PeerCertificate {
    /// Parses a DER certificate and finds its exchange identity. Checks nothing about time or
    /// revocation: see [`PeerCertificate::check`].
    pub fn parse(der: &[u8]) -> Result<PeerCertificate, IdentityError> {
        let (_, certificate) =
            x509_parser::parse_x509_certificate(der).map_err(|error| IdentityError::Malformed(error.to_string()))?;
        let names: Vec<String> = certificate
            .subject_alternative_name()
            .map_err(|error| IdentityError::Malformed(error.to_string()))?
            .map(|extension| {
                extension
                    .value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some(dns.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let identities: BTreeSet<PeerIdentity> = names.iter().filter_map(|n| PeerIdentity::from_dns_name(n)).collect();
        let mut identities = identities.into_iter();
        let identity = match (identities.next(), identities.next()) {
            (Some(identity), None) => identity,
            (None, _) => return Err(IdentityError::NoExchangeName { names }),
            (Some(_), Some(_)) => return Err(IdentityError::Ambiguous { names }),
        };
        let validity = certificate.validity();
        Ok(PeerCertificate {
            identity,
            serial_hex: serial_hex_of_bytes(certificate.raw_serial()),
            not_before_unix_s: validity.not_before.timestamp(),
            not_after_unix_s: validity.not_after.timestamp(),
        })
    }

    /// Refuses a revoked certificate, and one outside its validity at `now`. rustls checks the
    /// validity during the handshake too; this check lets the node refuse explicitly (a
    /// long-lived connection outlives its certificate's validity).
    pub fn check(&self, revocations: &RevocationList, now: SystemTime) -> Result<PeerIdentity, IdentityError> {
        if revocations.is_revoked(&self.serial_hex) {
            return Err(IdentityError::Revoked {
                serial: self.serial_hex.clone(),
            });
        }
        let now_unix_s = unix_seconds(now);
        if now_unix_s < self.not_before_unix_s {
            return Err(IdentityError::NotYetValid {
                not_before_unix_s: self.not_before_unix_s,
            });
        }
        if now_unix_s > self.not_after_unix_s {
            return Err(IdentityError::Expired {
                not_after_unix_s: self.not_after_unix_s,
            });
        }
        Ok(self.identity)
    }
}

/// The identity of a peer certificate (DER, e.g. the first of `request.peer_certs()`), refusing
/// revoked, expired and not-yet-valid certificates and names outside the exchange's scheme.
pub fn peer_identity(der: &[u8], revocations: &RevocationList, now: SystemTime) -> Result<PeerIdentity, IdentityError> {
    PeerCertificate::parse(der)?.check(revocations, now)
}

/// The identity of the client of a gRPC request over mutual TLS (see [`peer_identity`]).
pub fn peer_identity_of_request<T>(
    request: &tonic::Request<T>,
    revocations: &RevocationList,
    now: SystemTime,
) -> Result<PeerIdentity, IdentityError> {
    let certificates = request.peer_certs().ok_or(IdentityError::NoCertificate)?;
    // The leaf comes first in the chain the client presented.
    let leaf = certificates.first().ok_or(IdentityError::NoCertificate)?;
    peer_identity(leaf.as_ref(), revocations, now)
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, i64::saturating_neg),
    }
}

fn serial_hex_of_bytes(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Normalises a serial number written in hex (`0A:1b:...`, `0a1b...`): lower case, no
/// separators, no leading zeros, so that any spelling of one serial compares equal.
pub fn normalize_serial_hex(text: &str) -> Result<String, PkiError> {
    let digits: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let bad = || PkiError::BadSerial {
        serial: text.to_string(),
        max_digits: SERIAL_HEX_DIGITS_MAX,
    };
    let digits = digits.strip_prefix("0x").unwrap_or(&digits);
    if digits.is_empty() || digits.len() > SERIAL_HEX_DIGITS_MAX || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let trimmed = digits.trim_start_matches('0');
    Ok(if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    })
}

/// Serial numbers of revoked certificates, from configuration. Checked whenever a peer's
/// identity is parsed, so a revoked node is refused on its next call even on an old connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationList {
    serials: BTreeSet<String>,
}

impl RevocationList {
    pub fn new() -> RevocationList {
        RevocationList::default()
    }

    /// A list from hex serial numbers in any common spelling (see [`normalize_serial_hex`]).
    pub fn from_hex_serials<I, S>(serials: I) -> Result<RevocationList, PkiError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = RevocationList::new();
        for serial in serials {
            list.revoke_hex(serial.as_ref())?;
        }
        Ok(list)
    }

    pub fn revoke_hex(&mut self, serial: &str) -> Result<(), PkiError> {
        if self.serials.len() >= REVOKED_SERIALS_MAX {
            return Err(PkiError::TooManyRevokedSerials {
                max: REVOKED_SERIALS_MAX,
            });
        }
        self.serials.insert(normalize_serial_hex(serial)?);
        Ok(())
    }

    /// Whether a serial (in any spelling) is revoked; an unparsable serial is not in the list.
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        normalize_serial_hex(serial_hex).is_ok_and(|serial| self.serials.contains(&serial))
    }

    pub fn len(&self) -> usize {
        self.serials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_round_trip() {
        let chongqing: Province = "500000".parse().unwrap();
        for identity in [
            PeerIdentity::Node(chongqing),
            PeerIdentity::Bureau(chongqing),
            PeerIdentity::Monitor,
        ] {
            assert_eq!(PeerIdentity::from_dns_name(&identity.dns_name()), Some(identity));
        }
        assert_eq!(
            PeerIdentity::from_dns_name("NODE.500000.Exchange"),
            Some(PeerIdentity::Node(chongqing))
        );
        for other in [
            "node.500100.exchange",
            "node.990000.exchange",
            "admin.500000.exchange",
            "node.500000.example",
            "monitor.exchange.evil",
            "localhost",
            "",
        ] {
            assert_eq!(PeerIdentity::from_dns_name(other), None, "{other}");
        }
    }

    #[test]
    fn serials_normalise() {
        assert_eq!(normalize_serial_hex("00:0A:1b").unwrap(), "a1b");
        assert_eq!(normalize_serial_hex("0x0a1B").unwrap(), "a1b");
        assert_eq!(normalize_serial_hex("000").unwrap(), "0");
        assert!(normalize_serial_hex("xyz").is_err());
        assert!(normalize_serial_hex("").is_err());
        assert!(normalize_serial_hex(&"1".repeat(41)).is_err());
        let list = RevocationList::from_hex_serials(["0A:1B"]).unwrap();
        assert!(list.is_revoked("a1b"));
        assert!(!list.is_revoked("a1c"));
    }
}

/// Most certificates [`ParsedCertificates`] remembers; past it, it starts over (a node sees a
/// handful: its peers, its bureau tools, the monitor).
pub const PARSED_CERTIFICATES_MAX: usize = 1_024;

/// Parsed certificates by their DER bytes, so a request does not parse its connection's
/// certificate again (x509 parsing was ~4 % of a coordinator's CPU at 10,000 settlements/s).
/// Only parsing is remembered: revocation and validity are checked on every request with
/// [`PeerCertificate::check`].
#[derive(Debug, Default)]
pub struct ParsedCertificates {
    parsed: std::sync::Mutex<std::collections::HashMap<Vec<u8>, PeerCertificate>>,
}

impl ParsedCertificates {
    /// [`PeerCertificate::parse`], remembered. A certificate that does not parse is not
    /// remembered (each such request pays for its own refusal).
    pub fn parse(&self, der: &[u8]) -> Result<PeerCertificate, IdentityError> {
        if let Ok(parsed) = self.parsed.lock() {
            if let Some(found) = parsed.get(der) {
                return Ok(found.clone());
            }
        }
        let certificate = PeerCertificate::parse(der)?;
        if let Ok(mut parsed) = self.parsed.lock() {
            if parsed.len() >= PARSED_CERTIFICATES_MAX {
                parsed.clear();
            }
            parsed.insert(der.to_vec(), certificate.clone());
        }
        Ok(certificate)
    }
}
