//! Conversions of the node-to-node messages (`Exchange.Deliver`) and of whole batches.

use exchange_core::LegId;
use exchange_core::message::{self as domain, LegOutcome, RefusalCode, Registration};

use crate::common::{refusal_from_wire, refusal_to_wire};
use crate::error::{ConvertError, ConvertResult};
use crate::fields::{binding_id, enumeration, money, nested, optional_binding_id, person, repeated, required};
use crate::pb;

/// Most peer messages one `Deliver` call may carry. A peer link batches what its queue holds
/// up to this many; a bigger batch is refused whole, so one call's work stays bounded.
pub const PEER_BATCH_MESSAGES_MAX: usize = 512;

impl TryFrom<pb::Prepare> for domain::Prepare {
    type Error = ConvertError;
    fn try_from(prepare: pb::Prepare) -> ConvertResult<domain::Prepare> {
        Ok(domain::Prepare {
            leg: nested("leg", prepare.leg)?,
            binding: optional_binding_id("binding", prepare.binding.as_deref())?,
            patient: person("patient", &prepare.patient)?,
            amount_max: money("amount_max_fen", prepare.amount_max_fen)?,
            hold_timeout_ms: prepare.hold_timeout_ms,
        })
    }
}

impl From<domain::Prepare> for pb::Prepare {
    fn from(prepare: domain::Prepare) -> pb::Prepare {
        pb::Prepare {
            leg: Some(prepare.leg.into()),
            binding: prepare.binding.map(|id| id.to_string()),
            patient: prepare.patient.to_string(),
            amount_max_fen: prepare.amount_max.fen(),
            hold_timeout_ms: prepare.hold_timeout_ms,
        }
    }
}

fn vote_from_wire(vote: Option<pb::vote::Vote>) -> ConvertResult<domain::Vote> {
    Ok(match required("vote", vote)? {
        pb::vote::Vote::Yes(yes) => domain::Vote::Yes {
            held: money("yes.held_fen", yes.held_fen)?,
            available_before: money("yes.available_before_fen", yes.available_before_fen)?,
        },
        pb::vote::Vote::No(no) => domain::Vote::No {
            reason: refusal_from_wire("no.reason", no.reason)?,
        },
    })
}

fn vote_to_wire(vote: domain::Vote) -> pb::vote::Vote {
    match vote {
        domain::Vote::Yes { held, available_before } => pb::vote::Vote::Yes(pb::vote::Yes {
            held_fen: held.fen(),
            available_before_fen: available_before.fen(),
        }),
        domain::Vote::No { reason } => pb::vote::Vote::No(pb::vote::No {
            reason: refusal_to_wire(reason).into(),
        }),
    }
}

impl TryFrom<pb::LegOutcome> for LegOutcome {
    type Error = ConvertError;
    fn try_from(outcome: pb::LegOutcome) -> ConvertResult<LegOutcome> {
        Ok(match required("outcome", outcome.outcome)? {
            pb::leg_outcome::Outcome::Committed(committed) => LegOutcome::Committed {
                amount: money("committed.amount_fen", committed.amount_fen)?,
            },
            pb::leg_outcome::Outcome::Aborted(_) => LegOutcome::Aborted,
            pb::leg_outcome::Outcome::Credited(credited) => LegOutcome::Credited {
                amount: money("credited.amount_fen", credited.amount_fen)?,
            },
        })
    }
}

impl From<LegOutcome> for pb::LegOutcome {
    fn from(outcome: LegOutcome) -> pb::LegOutcome {
        let outcome = match outcome {
            LegOutcome::Committed { amount } => pb::leg_outcome::Outcome::Committed(pb::leg_outcome::Committed {
                amount_fen: amount.fen(),
            }),
            LegOutcome::Aborted => pb::leg_outcome::Outcome::Aborted(pb::leg_outcome::Aborted {}),
            LegOutcome::Credited { amount } => pb::leg_outcome::Outcome::Credited(pb::leg_outcome::Credited {
                amount_fen: amount.fen(),
            }),
        };
        pb::LegOutcome { outcome: Some(outcome) }
    }
}

fn registration_refusal_from_wire(field: &str, value: i32) -> ConvertResult<RefusalCode> {
    use pb::RegistrationRefusal as Wire;
    match enumeration(field, value, Wire::Unspecified)? {
        Wire::GranteeNotEnrolled => Ok(RefusalCode::GranteeNotEnrolled),
        Wire::GranteeClosed => Ok(RefusalCode::GranteeClosed),
        Wire::TooManyGrantors => Ok(RefusalCode::TooManyGrantors),
        Wire::Malformed => Ok(RefusalCode::Malformed),
        Wire::Unspecified => Err(ConvertError::missing(field)),
    }
}

fn registration_refusal_to_wire(code: RefusalCode) -> pb::RegistrationRefusal {
    match code {
        RefusalCode::GranteeNotEnrolled => pb::RegistrationRefusal::GranteeNotEnrolled,
        RefusalCode::GranteeClosed => pb::RegistrationRefusal::GranteeClosed,
        RefusalCode::TooManyGrantors => pb::RegistrationRefusal::TooManyGrantors,
        RefusalCode::Malformed => pb::RegistrationRefusal::Malformed,
    }
}

fn registration_from_wire(registration: Option<pb::registered::Registration>) -> ConvertResult<Registration> {
    Ok(match required("registration", registration)? {
        pb::registered::Registration::Accepted(_) => Registration::Accepted,
        pb::registered::Registration::Refused(refused) => Registration::Refused {
            code: registration_refusal_from_wire("refused.code", refused.code)?,
        },
    })
}

fn registration_to_wire(registration: Registration) -> pb::registered::Registration {
    match registration {
        Registration::Accepted => pb::registered::Registration::Accepted(pb::registered::Accepted {}),
        Registration::Refused { code } => pb::registered::Registration::Refused(pb::registered::Refused {
            code: registration_refusal_to_wire(code).into(),
        }),
    }
}

fn leg(field: &str, leg: Option<pb::LegId>) -> ConvertResult<LegId> {
    nested(field, leg)
}

impl TryFrom<pb::PeerMessage> for domain::PeerMessage {
    type Error = ConvertError;
    fn try_from(message: pb::PeerMessage) -> ConvertResult<domain::PeerMessage> {
        use pb::peer_message::Message as Wire;
        // Each variant's errors carry the variant's name, e.g. `vote.leg.index`.
        let within = |name: &'static str| move |error: ConvertError| error.within(name);
        Ok(match required("message", message.message)? {
            Wire::Prepare(prepare) => domain::PeerMessage::Prepare(prepare.try_into().map_err(within("prepare"))?),
            Wire::Vote(vote) => (|| {
                Ok(domain::PeerMessage::Vote {
                    leg: leg("leg", vote.leg)?,
                    vote: vote_from_wire(vote.vote)?,
                })
            })()
            .map_err(within("vote"))?,
            Wire::Commit(commit) => (|| {
                Ok(domain::PeerMessage::Commit {
                    leg: leg("leg", commit.leg)?,
                    amount: money("amount_fen", commit.amount_fen)?,
                })
            })()
            .map_err(within("commit"))?,
            Wire::Abort(abort) => domain::PeerMessage::Abort {
                leg: leg("leg", abort.leg).map_err(within("abort"))?,
            },
            Wire::Credit(credit) => (|| {
                Ok(domain::PeerMessage::Credit {
                    leg: leg("leg", credit.leg)?,
                    original: leg("original", credit.original)?,
                    amount: money("amount_fen", credit.amount_fen)?,
                })
            })()
            .map_err(within("credit"))?,
            Wire::Ack(ack) => (|| {
                Ok(domain::PeerMessage::Ack {
                    leg: leg("leg", ack.leg)?,
                    outcome: nested("outcome", ack.outcome)?,
                })
            })()
            .map_err(within("ack"))?,
            Wire::Query(query) => domain::PeerMessage::Query {
                leg: leg("leg", query.leg).map_err(within("query"))?,
            },
            Wire::RegisterBinding(register) => domain::PeerMessage::RegisterBinding(
                nested("binding", register.binding).map_err(within("register_binding"))?,
            ),
            Wire::Registered(registered) => (|| {
                Ok(domain::PeerMessage::Registered {
                    binding: binding_id("binding", &registered.binding)?,
                    registration: registration_from_wire(registered.registration)?,
                })
            })()
            .map_err(within("registered"))?,
            Wire::Revoked(revoked) => domain::PeerMessage::Revoked {
                binding: binding_id("binding", &revoked.binding).map_err(within("revoked"))?,
                at_wall_ms: revoked.at_wall_ms,
            },
            Wire::RevocationNoted(noted) => domain::PeerMessage::RevocationNoted {
                binding: binding_id("binding", &noted.binding).map_err(within("revocation_noted"))?,
            },
        })
    }
}

impl From<domain::PeerMessage> for pb::PeerMessage {
    fn from(message: domain::PeerMessage) -> pb::PeerMessage {
        use pb::peer_message::Message as Wire;
        let message = match message {
            domain::PeerMessage::Prepare(prepare) => Wire::Prepare(prepare.into()),
            domain::PeerMessage::Vote { leg, vote } => Wire::Vote(pb::Vote {
                leg: Some(leg.into()),
                vote: Some(vote_to_wire(vote)),
            }),
            domain::PeerMessage::Commit { leg, amount } => Wire::Commit(pb::Commit {
                leg: Some(leg.into()),
                amount_fen: amount.fen(),
            }),
            domain::PeerMessage::Abort { leg } => Wire::Abort(pb::Abort { leg: Some(leg.into()) }),
            domain::PeerMessage::Credit { leg, original, amount } => Wire::Credit(pb::Credit {
                leg: Some(leg.into()),
                original: Some(original.into()),
                amount_fen: amount.fen(),
            }),
            domain::PeerMessage::Ack { leg, outcome } => Wire::Ack(pb::Ack {
                leg: Some(leg.into()),
                outcome: Some(outcome.into()),
            }),
            domain::PeerMessage::Query { leg } => Wire::Query(pb::Query { leg: Some(leg.into()) }),
            domain::PeerMessage::RegisterBinding(binding) => Wire::RegisterBinding(pb::RegisterBinding {
                binding: Some(binding.into()),
            }),
            domain::PeerMessage::Registered { binding, registration } => Wire::Registered(pb::Registered {
                binding: binding.to_string(),
                registration: Some(registration_to_wire(registration)),
            }),
            domain::PeerMessage::Revoked { binding, at_wall_ms } => Wire::Revoked(pb::Revoked {
                binding: binding.to_string(),
                at_wall_ms,
            }),
            domain::PeerMessage::RevocationNoted { binding } => Wire::RevocationNoted(pb::RevocationNoted {
                binding: binding.to_string(),
            }),
        };
        pb::PeerMessage { message: Some(message) }
    }
}

/// The messages of a batch, all or none: a batch above [`PEER_BATCH_MESSAGES_MAX`] or with any
/// bad message is refused whole (the error names the bad message's index). A correct peer never
/// sends a bad message, so refusing the batch loses nothing a correct peer needs, and the
/// receiver never acts on half of what a confused peer sent.
pub fn peer_batch_from_wire(batch: pb::PeerBatch) -> ConvertResult<Vec<domain::PeerMessage>> {
    if batch.messages.len() > PEER_BATCH_MESSAGES_MAX {
        return Err(ConvertError::new(
            "messages",
            format!(
                "holds {} messages; at most {PEER_BATCH_MESSAGES_MAX} are allowed per batch",
                batch.messages.len()
            ),
        ));
    }
    repeated("messages", batch.messages)
}

/// Counts the messages of an encoded `PeerBatch` without decoding them, refusing a batch above
/// [`PEER_BATCH_MESSAGES_MAX`] before anything is allocated for it. Decoding is the expensive
/// part: an empty message is 2 bytes on the wire and about 200 bytes once decoded, so a batch
/// of 4 MiB (the message size limit) of empty messages would take some 400 MiB in memory before
/// [`peer_batch_from_wire`] could count it. Also refuses what is not a protobuf encoding of a
/// batch (a truncated field, a varint of more than 10 bytes, field number 0, groups).
pub fn peer_batch_len_of_encoded(mut bytes: &[u8]) -> ConvertResult<usize> {
    let mut count = 0usize;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let field = key.checked_shr(3).unwrap_or(0);
        if field == 0 {
            return Err(malformed("field number 0"));
        }
        match key & 7 {
            0 => {
                varint(&mut bytes)?;
            }
            1 => skip(&mut bytes, 8)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).map_err(|_| malformed("length out of range"))?;
                skip(&mut bytes, len)?;
                if field == 1 {
                    count = count.saturating_add(1);
                    if count > PEER_BATCH_MESSAGES_MAX {
                        return Err(ConvertError::new(
                            "messages",
                            format!(
                                "holds more than {PEER_BATCH_MESSAGES_MAX} messages; at most {PEER_BATCH_MESSAGES_MAX} are allowed per batch"
                            ),
                        ));
                    }
                }
            }
            5 => skip(&mut bytes, 4)?,
            other => return Err(malformed(&format!("wire type {other}"))),
        }
    }
    Ok(count)
}

fn malformed(what: &str) -> ConvertError {
    ConvertError::new("batch", format!("not a protobuf encoding of a peer batch ({what})"))
}

/// Reads one base-128 varint (at most 10 bytes) from the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> ConvertResult<u64> {
    let mut value = 0u64;
    for shift in (0u32..70).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or_else(|| malformed("truncated varint"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

fn skip(bytes: &mut &[u8], len: usize) -> ConvertResult<()> {
    *bytes = bytes.get(len..).ok_or_else(|| malformed("truncated field"))?;
    Ok(())
}

/// Splits outgoing messages into batches of at most [`PEER_BATCH_MESSAGES_MAX`].
pub fn peer_batches_to_wire(messages: Vec<domain::PeerMessage>) -> Vec<pb::PeerBatch> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    for message in messages {
        if current.len() == PEER_BATCH_MESSAGES_MAX {
            batches.push(pb::PeerBatch {
                messages: std::mem::take(&mut current),
            });
        }
        current.push(pb::PeerMessage::from(message));
    }
    if !current.is_empty() {
        batches.push(pb::PeerBatch { messages: current });
    }
    batches
}
