//! The operator audit log: append-only records of who (by certificate) did what, when, with
//! which result, hash-chained so that changing, removing or reordering a record is detectable.
//!
//! Record `n` (seq 1, 2, ...) carries `prev_hash` = the hash of record `n - 1` (all zeros for
//! record 1) and `hash` = SHA-256(`prev_hash` || the canonical encoding of its other fields);
//! see [`AuditRecord::compute_hash`]. The canonical encoding is written by hand (fixed-width
//! big-endian integers, length-prefixed UTF-8), so it does not depend on how the record is
//! stored.
//!
//! Storage: records are chained and given a durability ticket at append, and written to the
//! store's `audit` tree in **pages**: a list of consecutive records under the seq (big-endian)
//! of its first. Outcome and read records wait in memory and go out with the next page; a
//! page holding an intent goes out right before the store's next write of any kind (write set,
//! counter), so an intent is in sled's log before any write of its action (sled recovers a
//! prefix of its log: after a crash no effect survives without its intent). Pages are also
//! written right before every flush and when full (`AUDIT_PAGE_RECORDS_MAX`,
//! `AUDIT_PAGE_BYTES_MAX`). So the settlements arriving between two writes share one sled
//! insert for their audit records (the audit log was ~12 % of a coordinator's CPU with an
//! insert per settlement, most of it sled inserts and node splits of this ever-growing tree).
//! An action that writes nothing (a settlement's prepares, presumed abort) may leave before
//! its intent is in sled's log: its intent is then durable with the next flush, as it always
//! was (no intent was ever flushed before the prepares left). Stores written before pages
//! hold one record per key; readers and verifiers accept both.
//!
//! What a chain cannot show alone: a rewrite of the whole chain from some record on (every
//! hash recomputed), or the removal of the newest records. Against both, keep the head hash
//! that `verify` prints somewhere else (a daily report): a later chain must extend it.
//!
//! Node-level bookkeeping, not protocol: nothing in `exchange-core` reads it.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{decode, decode_u64};
use crate::error::StoreError;
use crate::{AUDIT_SHORT_TEXT_BYTES_MAX, AUDIT_TEXT_BYTES_MAX};

/// The name of the sled tree that holds the audit log.
pub(crate) const AUDIT_TREE: &str = "audit";
/// The `outcome` of a record written before an action is handed to the core.
pub const AUDIT_INTENT: &str = "intent";
/// The `prev_hash` of record 1.
pub const AUDIT_GENESIS_HASH: [u8; 32] = [0; 32];
/// Domain separation of the hashed encoding (and its version).
const HASH_DOMAIN: &[u8] = b"exchange-audit-v1\0";
/// Most records in one stored page.
pub const AUDIT_PAGE_RECORDS_MAX: usize = 64;
/// Most bytes (about) of one stored page. sled 0.34 writes any log item over ~128 KiB
/// (a quarter of its 512 KiB segment) to a blob file of its own (which sled never `fsync`s:
/// our flush does, see `durability.rs`, at the cost of a file created and synced per item); a
/// leaf of the tree is one item when sled rewrites it whole, and holds up to 17 values before
/// it splits. So a page must stay under ~7 KiB, or the audit tree's leaves become blob files
/// (found in a benchmark: 64 KiB pages made a coordinator write ~25 blob files a second).
/// A record alone is at most ~5.8 KiB (`AUDIT_TEXT_BYTES_MAX` + 3 × `AUDIT_SHORT_TEXT_BYTES_MAX`).
pub const AUDIT_PAGE_BYTES_MAX: usize = 6 * 1024;
/// Most unanswered intents a verification lists (it counts them all).
pub const AUDIT_OPEN_INTENTS_LISTED_MAX: usize = 20;

/// What a caller appends; the store adds the seq and the hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix milliseconds of the node's wall clock.
    pub wall_ms: i64,
    /// Who: the verified certificate identity (and serial) of the caller.
    pub actor: String,
    /// What: the RPC method, e.g. `settle`.
    pub action: String,
    /// A compact summary of the request (or, in an outcome record, of the reply). No secrets.
    pub detail: String,
    /// `intent`, `ok`, `refused: <reason>`, `unavailable: ...`.
    pub outcome: String,
    /// For the outcome of an action: the seq of its intent record.
    pub intent_seq: Option<u64>,
}

/// One record of the audit log, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub wall_ms: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub outcome: String,
    pub intent_seq: Option<u64>,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditRecord {
    /// Builds record `seq` after a record whose hash is `prev_hash`, truncating long texts to
    /// `AUDIT_TEXT_BYTES_MAX` (the detail) or `AUDIT_SHORT_TEXT_BYTES_MAX` bytes (at a character
    /// boundary).
    pub(crate) fn chained(seq: u64, prev_hash: [u8; 32], entry: &AuditEntry) -> AuditRecord {
        let mut record = AuditRecord {
            seq,
            wall_ms: entry.wall_ms,
            actor: bounded(&entry.actor, AUDIT_SHORT_TEXT_BYTES_MAX),
            action: bounded(&entry.action, AUDIT_SHORT_TEXT_BYTES_MAX),
            detail: bounded(&entry.detail, AUDIT_TEXT_BYTES_MAX),
            outcome: bounded(&entry.outcome, AUDIT_SHORT_TEXT_BYTES_MAX),
            intent_seq: entry.intent_seq,
            prev_hash,
            hash: [0; 32],
        };
        record.hash = record.compute_hash();
        record
    }

    /// SHA-256 of `prev_hash` followed by the canonical encoding of every other field but
    /// `hash`: a domain tag, seq and wall_ms as 8 bytes big-endian, each text as its length
    /// (4 bytes big-endian) then its UTF-8 bytes, `intent_seq` as one byte 0 (absent) or 1
    /// followed by 8 bytes big-endian.
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash);
        hasher.update(HASH_DOMAIN);
        hasher.update(self.seq.to_be_bytes());
        hasher.update(self.wall_ms.to_be_bytes());
        for text in [&self.actor, &self.action, &self.detail, &self.outcome] {
            // Texts are at most AUDIT_TEXT_BYTES_MAX when written; a longer one read back
            // (tampering) still hashes deterministically.
            let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
            hasher.update(len.to_be_bytes());
            hasher.update(text.as_bytes());
        }
        match self.intent_seq {
            Some(seq) => {
                hasher.update([1]);
                hasher.update(seq.to_be_bytes());
            }
            None => hasher.update([0]),
        }
        hasher.finalize().into()
    }

    /// About how many bytes the record takes stored (for the page size limit).
    pub(crate) fn approximate_bytes(&self) -> usize {
        let texts = [&self.actor, &self.action, &self.detail, &self.outcome];
        // Over-estimates the MessagePack overhead (two 32-byte hashes, integers, headers).
        texts.iter().map(|text| text.len()).sum::<usize>().saturating_add(192)
    }

    /// Whether this record is an intent (written before its action ran).
    pub fn is_intent(&self) -> bool {
        self.outcome == AUDIT_INTENT && self.intent_seq.is_none()
    }
}

/// The records of one stored page, in order: a list, or (one record) a record alone.
pub(crate) fn decode_audit_page(value: &[u8]) -> Result<Vec<AuditRecord>, StoreError> {
    match decode::<Vec<AuditRecord>>(AUDIT_TREE, value) {
        Ok(page) => Ok(page),
        Err(_) => Ok(vec![decode::<AuditRecord>(AUDIT_TREE, value)?]),
    }
}

/// Lower-case hex of a hash.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(64);
    for byte in hash {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let mut cut = text.get(..end).unwrap_or_default().to_string();
    cut.push('…');
    cut
}

/// Where and why a chain does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditBreak {
    /// The first seq that is missing, out of place, undecodable or does not match its hash
    /// or its predecessor.
    pub seq: u64,
    pub reason: String,
}

/// The result of walking the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerification {
    /// Records that verified (all of them when `broken` is `None`).
    pub records: u64,
    /// The seq and hash of the last record that verified (0 and zeros for an empty log).
    pub head_seq: u64,
    pub head_hash: [u8; 32],
    /// The first problem, if any.
    pub broken: Option<AuditBreak>,
    /// Intents with no outcome record: actions in flight during the walk, or whose outcome
    /// a crash lost (the intent is durable before any effect; the outcome may not be).
    pub intents_without_outcome: u64,
    /// The first `AUDIT_OPEN_INTENTS_LISTED_MAX` of them.
    pub open_intents: Vec<u64>,
}

impl AuditVerification {
    /// The verification of an empty log.
    pub fn empty() -> AuditVerification {
        AuditVerification {
            records: 0,
            head_seq: 0,
            head_hash: AUDIT_GENESIS_HASH,
            broken: None,
            intents_without_outcome: 0,
            open_intents: Vec::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Walks `tree` from seq 1, checking that records are 1, 2, 3... without gaps, that each page
/// decodes and sits under the seq of its first record, that each record links to the
/// previous hash and recomputes to its hash, and that each outcome answers an open intent.
/// Stops at the first problem or after `up_to` (records appended during the walk are left
/// for the next one). O(page) memory but for the set of open intents.
pub(crate) fn verify_tree(tree: &sled::Tree, up_to: Option<u64>) -> Result<AuditVerification, StoreError> {
    let mut verification = AuditVerification::empty();
    let mut open = BTreeSet::new();
    'pages: for item in tree.iter() {
        let (key, value) = item?;
        let expected = verification.head_seq.saturating_add(1);
        if up_to.is_some_and(|last| expected > last) {
            break;
        }
        let records = match check_page(&key, &value, expected) {
            Ok(records) => records,
            Err(reason) => {
                verification.broken = Some(AuditBreak { seq: expected, reason });
                break;
            }
        };
        for record in records {
            let expected = verification.head_seq.saturating_add(1);
            if up_to.is_some_and(|last| expected > last) {
                break 'pages;
            }
            if let Err(reason) = check_record(&record, expected, &verification.head_hash, &mut open) {
                verification.broken = Some(AuditBreak { seq: expected, reason });
                break 'pages;
            }
            verification.records = verification.records.saturating_add(1);
            verification.head_seq = record.seq;
            verification.head_hash = record.hash;
        }
    }
    verification.intents_without_outcome = u64::try_from(open.len()).unwrap_or(u64::MAX);
    verification.open_intents = open.into_iter().take(AUDIT_OPEN_INTENTS_LISTED_MAX).collect();
    Ok(verification)
}

/// The records of the page under `key` if it starts with record `expected`; why not otherwise.
fn check_page(key: &[u8], value: &[u8], expected: u64) -> Result<Vec<AuditRecord>, String> {
    let seq = decode_u64(AUDIT_TREE, key).map_err(|error| format!("bad key: {error}"))?;
    if seq != expected {
        return Err(if seq > expected {
            format!("record {expected} is missing (the next key is {seq})")
        } else {
            format!("key {seq} is out of order")
        });
    }
    let records = decode_audit_page(value).map_err(|error| format!("record does not decode: {error}"))?;
    match records.first() {
        None => Err(format!("the page under key {seq} is empty")),
        Some(first) if first.seq != seq => Err(format!("record under key {seq} says it is {}", first.seq)),
        Some(_) => Ok(records),
    }
}

/// Whether `record` is record `expected` after `prev_hash`; why not otherwise.
fn check_record(
    record: &AuditRecord,
    expected: u64,
    prev_hash: &[u8; 32],
    open: &mut BTreeSet<u64>,
) -> Result<(), String> {
    let seq = record.seq;
    if seq != expected {
        return Err(if seq > expected {
            format!("record {expected} is missing (the next record is {seq})")
        } else {
            format!("record {seq} is out of order")
        });
    }
    if record.prev_hash != *prev_hash {
        return Err(format!(
            "prev_hash {} does not match the hash {} of record {}",
            hash_hex(&record.prev_hash),
            hash_hex(prev_hash),
            seq.saturating_sub(1)
        ));
    }
    let recomputed = record.compute_hash();
    if record.hash != recomputed {
        return Err(format!(
            "stored hash {} but the record hashes to {} (it was changed)",
            hash_hex(&record.hash),
            hash_hex(&recomputed)
        ));
    }
    if record.is_intent() {
        open.insert(seq);
    } else if let Some(intent) = record.intent_seq
        && !open.remove(&intent)
    {
        return Err(format!("outcome of {intent}, which is not an unanswered intent"));
    }
    Ok(())
}

/// Checks the newest record of `tree` (at open): its key and hash must agree. Returns the seq
/// the next record gets and the hash it links to.
pub(crate) fn load_head(tree: &sled::Tree) -> Result<(u64, [u8; 32]), StoreError> {
    let Some((key, value)) = tree.last()? else {
        return Ok((1, AUDIT_GENESIS_HASH));
    };
    let key_seq = decode_u64(AUDIT_TREE, &key)?;
    let page = decode_audit_page(&value)?;
    let corrupt = |detail: String| StoreError::Corrupt {
        tree: AUDIT_TREE,
        detail,
    };
    let (Some(first), Some(record)) = (page.first(), page.last()) else {
        return Err(corrupt(format!("the last audit page, under key {key_seq}, is empty")));
    };
    let seq = record.seq;
    let consecutive = page
        .iter()
        .enumerate()
        .all(|(at, r)| u64::try_from(at).is_ok_and(|at| r.seq == first.seq.saturating_add(at)));
    if first.seq != key_seq || !consecutive {
        return Err(corrupt(format!(
            "the last audit page, under key {key_seq}, holds records {}..{seq}; run `exchange audit-verify`",
            first.seq
        )));
    }
    if record.compute_hash() != record.hash {
        return Err(corrupt(format!(
            "the last audit record ({seq}) does not match its hash; run `exchange audit-verify`"
        )));
    }
    let next = seq
        .checked_add(1)
        .ok_or_else(|| corrupt("the last audit seq is u64::MAX".to_string()))?;
    Ok((next, record.hash))
}

/// Verifies the audit log of the store at `path` without starting a node: opens the database
/// directly (so it fails while a node holds it), never writes, and does not refuse a store
/// whose newest record is broken (as `Store::open` does): it reports it.
pub fn verify_audit_at(path: &Path) -> Result<AuditVerification, StoreError> {
    if !path.join("conf").is_file() {
        return Err(StoreError::Corrupt {
            tree: AUDIT_TREE,
            detail: format!("no store at {} (no sled `conf` file)", path.display()),
        });
    }
    let db = crate::store::open_waiting_for_lock(&sled::Config::new().path(path).cache_capacity(16 << 20))?;
    let exists = db
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == AUDIT_TREE.as_bytes());
    if !exists {
        // A store from before the audit log: nothing to verify (and nothing to create).
        return Ok(AuditVerification::empty());
    }
    verify_tree(&db.open_tree(AUDIT_TREE)?, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(detail: &str) -> AuditEntry {
        AuditEntry {
            wall_ms: 1_700_000_000_000,
            actor: "bureau.500000.exchange".into(),
            action: "settle".into(),
            detail: detail.into(),
            outcome: "ok".into(),
            intent_seq: None,
        }
    }

    #[test]
    fn every_field_is_in_the_hash() {
        let base = AuditRecord::chained(1, AUDIT_GENESIS_HASH, &entry("x"));
        let variants = [
            AuditRecord { seq: 2, ..base.clone() },
            AuditRecord {
                wall_ms: 1,
                ..base.clone()
            },
            AuditRecord {
                actor: "bureau.110000.exchange".into(),
                ..base.clone()
            },
            AuditRecord {
                action: "refund".into(),
                ..base.clone()
            },
            AuditRecord {
                detail: "y".into(),
                ..base.clone()
            },
            AuditRecord {
                outcome: "refused: x".into(),
                ..base.clone()
            },
            AuditRecord {
                intent_seq: Some(0),
                ..base.clone()
            },
            AuditRecord {
                prev_hash: [1; 32],
                ..base.clone()
            },
        ];
        for variant in variants {
            assert_ne!(variant.compute_hash(), base.hash, "{variant:?}");
        }
        // Moving bytes between adjacent texts changes the hash too (length prefixes).
        let shifted = AuditRecord {
            actor: "bureau.500000.exchangesettle".into(),
            action: String::new(),
            ..base.clone()
        };
        assert_ne!(shifted.compute_hash(), base.hash);
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let long = "账".repeat(AUDIT_TEXT_BYTES_MAX);
        let record = AuditRecord::chained(1, AUDIT_GENESIS_HASH, &entry(&long));
        assert!(record.detail.len() <= AUDIT_TEXT_BYTES_MAX);
        assert!(record.detail.ends_with('…'));
        assert_eq!(hash_hex(&[0xab; 32]).len(), 64);
        assert!(hash_hex(&[0xab; 32]).starts_with("abab"));
    }
}
