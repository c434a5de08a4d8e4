//! The operator audit log on the node's side: who called (certificate identity and serial),
//! how a call and its result are summarised, and the wire form of records and verifications.
//! The chain itself is the store's (`exchange_store::AuditRecord`).
//!
//! Durability: an action that goes through the core writes an `intent` record before it is
//! handed to the core. Every write the action makes, and every reply, waits for a flush that
//! covers everything applied before it, the intent included; so the intent is on disk before
//! any effect is acknowledged, at no extra flush. (A settlement's first prepares may leave
//! before it: they commit nothing, see `Effects::only_prepares_without_writes`.) The outcome record is written after the reply
//! and rides on the next flush: a crash may lose it, and the verifier then shows an intent
//! without outcome. A read writes one record after its result, also without waiting.

use std::fmt::Debug;
use std::time::SystemTime;

use exchange_pki::{IdentityError, PeerIdentity};
use exchange_proto::pb;
use exchange_store::{AuditRecord, AuditVerification, hash_hex};
use tonic::{Code, Request, Status};

use crate::context::Context;

/// Audit records per page when the caller names no size.
pub const AUDIT_PAGE_LEN_DEFAULT: usize = 100;

/// The verified caller of a request, and how the audit log names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub identity: PeerIdentity,
    /// `<identity> serial=<hex>`, e.g. `bureau.500000.exchange serial=3f2a...`.
    pub actor: String,
}

/// The caller of a gRPC request over mutual TLS: its certificate's identity, refusing revoked,
/// expired and not-yet-valid certificates (as `exchange_pki::peer_identity_of_request`), with
/// the certificate's serial for the audit log.
pub fn caller_of<T>(ctx: &Context, request: &Request<T>) -> Result<Caller, Status> {
    let certificates = request.peer_certs().ok_or(IdentityError::NoCertificate)?;
    // The leaf comes first in the chain the client presented.
    let leaf = certificates.first().ok_or(IdentityError::NoCertificate)?;
    let certificate = ctx.certificates.parse(leaf.as_ref())?;
    let identity = certificate.check(&ctx.revocations, SystemTime::now())?;
    Ok(Caller {
        identity,
        actor: format!("{identity} serial={}", certificate.serial_hex),
    })
}

/// A compact one-line summary of a request or reply: its `Debug` form (the proto messages
/// carry no keys or passwords; the store cuts long ones).
pub fn summary<T: Debug>(message: &T) -> String {
    format!("{message:?}")
}

/// The outcome of a call: `ok`; `refused: <reason>` for the core's refusals (the stable reason
/// code); otherwise the gRPC code and message, e.g. `unavailable: ...`, `permission_denied: ...`.
pub fn outcome_of<R>(result: &Result<R, Status>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(status) => match exchange_proto::status::status_to_client_error(status) {
            Some(error) => format!("refused: {}", error.reason),
            None => format!("{}: {}", code_name(status.code()), status.message()),
        },
    }
}

/// The gRPC code in snake_case (`PermissionDenied` -> `permission_denied`).
fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (index, character) in format!("{code:?}").chars().enumerate() {
        if character.is_ascii_uppercase() {
            if index > 0 {
                name.push('_');
            }
            name.push(character.to_ascii_lowercase());
        } else {
            name.push(character);
        }
    }
    name
}

pub fn record_to_wire(record: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: record.seq,
        wall_ms: record.wall_ms,
        actor: record.actor,
        action: record.action,
        detail: record.detail,
        outcome: record.outcome,
        intent_seq: record.intent_seq,
        prev_hash_hex: hash_hex(&record.prev_hash),
        hash_hex: hash_hex(&record.hash),
    }
}

pub fn verification_to_wire(verification: AuditVerification) -> pb::AuditVerification {
    let ok = verification.ok();
    let (broken_at_seq, reason) = match verification.broken {
        Some(broken) => (Some(broken.seq), broken.reason),
        None => (None, String::new()),
    };
    pb::AuditVerification {
        ok,
        records: verification.records,
        head_seq: verification.head_seq,
        head_hash_hex: hash_hex(&verification.head_hash),
        broken_at_seq,
        reason,
        intents_without_outcome: verification.intents_without_outcome,
        open_intents: verification.open_intents,
    }
}

/// The audit detail of a verification: what it found, so the log keeps the heads operators saw.
pub fn verification_detail(verification: &pb::AuditVerification) -> String {
    match verification.broken_at_seq {
        None => format!(
            "ok records={} head_seq={} head_hash={}",
            verification.records, verification.head_seq, verification.head_hash_hex
        ),
        Some(seq) => format!("BROKEN at {seq}: {}", verification.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_name_the_reason_or_the_code() {
        assert_eq!(outcome_of::<()>(&Ok(())), "ok");
        let refusal = exchange_proto::status::client_error_to_status(&exchange_core::ClientError::new(
            exchange_core::ErrorKind::AlreadyExists,
            "account_exists",
            "already open".to_string(),
        ));
        assert_eq!(outcome_of::<()>(&Err(refusal)), "refused: account_exists");
        assert_eq!(
            outcome_of::<()>(&Err(Status::permission_denied("no"))),
            "permission_denied: no"
        );
        assert_eq!(
            outcome_of::<()>(&Err(Status::deadline_exceeded("late"))),
            "deadline_exceeded: late"
        );
    }
}
