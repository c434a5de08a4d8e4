//! Fuzz targets, proptest-driven so that they run in CI: every message a node decodes from the
//! network (and every reply its clients decode), from arbitrary bytes, from protobuf-shaped
//! bytes, from mutated valid encodings, and as structured but hostile values (huge repeated
//! fields, over-long strings, unknown enum values, amounts past the maximum). Decoding and
//! conversion must never panic, and must either succeed or refuse with a `ConvertError` that
//! names a field; what they accept must survive a round trip unchanged.
//!
//! Each target runs `FUZZ_CASES` cases (default 256, a second or so in all); set e.g.
//! `FUZZ_CASES=100000` for a long run. `round_trip.rs` keeps its own smaller byte fuzzers.

mod strategies;

use exchange_core::message::{ClientReply, ClientRequest, PeerMessage};
use exchange_core::money::MONEY_MAX_FEN;
use exchange_core::policy::GRANTORS_PER_SETTLEMENT_MAX;
use exchange_core::records::{JournalEntry, Receipt, RefundReceipt, RefundRequest, SettleRequest};
use exchange_core::{Account, Binding};
use exchange_proto::{
    BureauReply, BureauRequest, ConvertError, PEER_BATCH_MESSAGES_MAX, TEXT_FIELD_LEN_MAX, pb, peer_batch_from_wire,
    peer_batch_len_of_encoded,
};
use proptest::prelude::*;
use prost::Message;

/// Cases per fuzz target: `FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

/// A refusal must say which field and why, and must travel as a status without panicking.
fn refusal_is_reported(error: &ConvertError) {
    assert!(!error.reason.is_empty(), "a refusal without a reason: {error:?}");
    let status = tonic::Status::from(error.clone());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// Decodes `bytes` as `P` and runs `convert`; a conversion error must be reported properly.
fn decode_then<P: Message + Default, R>(bytes: &[u8], convert: impl FnOnce(P) -> Result<R, ConvertError>) {
    if let Ok(message) = P::decode(bytes)
        && let Err(error) = convert(message)
    {
        refusal_is_reported(&error);
    }
}

fn decode_only<P: Message + Default>(bytes: &[u8]) {
    let _ = P::decode(bytes);
}

/// `Exchange.Deliver`: the count before decoding agrees with what decoding finds, and a batch
/// the count lets through converts or is refused properly.
fn deliver(bytes: &[u8]) {
    let counted = peer_batch_len_of_encoded(bytes);
    if let Err(error) = &counted {
        refusal_is_reported(error);
    }
    if let Ok(batch) = pb::PeerBatch::decode(bytes) {
        // The count refuses encodings prost tolerates (groups), and batches above the max;
        // what it lets through, it counts as prost does.
        if let Ok(count) = counted {
            assert_eq!(count, batch.messages.len(), "the pre-decode count disagrees with prost");
        }
        let len = batch.messages.len();
        match peer_batch_from_wire(batch) {
            Ok(messages) => assert!(messages.len() == len && len <= PEER_BATCH_MESSAGES_MAX),
            Err(error) => refusal_is_reported(&error),
        }
    }
}

fn bureau(bytes: &[u8]) {
    fn request<P: Message + Default>(bytes: &[u8], wrap: fn(P) -> BureauRequest) {
        decode_then::<P, _>(bytes, |message| ClientRequest::try_from(wrap(message)));
    }
    request(bytes, BureauRequest::OpenAccount);
    request(bytes, BureauRequest::Credit);
    request(bytes, BureauRequest::Freeze);
    request(bytes, BureauRequest::Unfreeze);
    request(bytes, BureauRequest::CloseAccount);
    request(bytes, BureauRequest::Bind);
    request(bytes, BureauRequest::Unbind);
    request(bytes, BureauRequest::Settle);
    request(bytes, BureauRequest::Refund);
    request(bytes, BureauRequest::SetOrder);
    request(bytes, BureauRequest::SetLimits);
    request(bytes, BureauRequest::Cancel);
    request(bytes, BureauRequest::Reverse);
    request(bytes, BureauRequest::Transfer);
    decode_then::<pb::GetAccountRequest, _>(bytes, |message| message.person_id());
    decode_then::<pb::ListBindingsRequest, _>(bytes, |message| message.person_id());
    decode_then::<pb::RecordsRequest, _>(bytes, |message| message.person_id());
    decode_then::<pb::ClearingRequest, _>(bytes, |message| message.period());
    decode_then::<pb::ReconcileRequest, _>(bytes, |message| message.checked());
    decode_only::<pb::AuditRequest>(bytes);
    decode_only::<pb::VerifyAuditRequest>(bytes);
}

fn exchange_and_monitor(bytes: &[u8]) {
    deliver(bytes);
    decode_only::<pb::JournalQuery>(bytes);
    decode_only::<pb::FeedRequest>(bytes);
    decode_only::<pb::StatusRequest>(bytes);
}

/// What the node's own clients decode: bureau replies, a peer's journal pages (reconcile),
/// the monitor feed.
fn replies(bytes: &[u8]) {
    fn reply<P: Message + Default>(bytes: &[u8], wrap: fn(P) -> BureauReply) {
        decode_then::<P, _>(bytes, |message| ClientReply::try_from(wrap(message)));
    }
    reply(bytes, BureauReply::Account);
    reply(bytes, BureauReply::Credited);
    reply(bytes, BureauReply::Bound);
    reply(bytes, BureauReply::Unbound);
    reply(bytes, BureauReply::Settled);
    reply(bytes, BureauReply::Refunded);
    reply(bytes, BureauReply::Ordered);
    reply(bytes, BureauReply::LimitsSet);
    reply(bytes, BureauReply::Transferred);
    decode_then::<pb::ListBindingsReply, _>(bytes, pb::ListBindingsReply::into_bindings);
    decode_then::<pb::JournalPage, _>(bytes, |page| {
        page.records
            .into_iter()
            .map(pb::JournalRecord::checked)
            .collect::<Result<Vec<_>, _>>()
    });
    decode_then::<pb::RecordsPage, _>(bytes, |page| {
        page.records
            .into_iter()
            .map(pb::JournalRecord::checked)
            .collect::<Result<Vec<_>, _>>()
    });
    decode_then::<pb::FeedEvent, _>(bytes, exchange_proto::feed_event_from_wire);
    decode_then::<pb::PeerMessage, _>(bytes, PeerMessage::try_from);
    decode_then::<pb::Binding, _>(bytes, Binding::try_from);
    decode_then::<pb::JournalEntry, _>(bytes, JournalEntry::try_from);
    decode_only::<pb::ClearingReport>(bytes);
    decode_only::<pb::ReconcileReport>(bytes);
    decode_only::<pb::AuditPage>(bytes);
    decode_only::<pb::AuditVerification>(bytes);
    decode_only::<pb::NodeStatus>(bytes);
    decode_only::<pb::DeliverReply>(bytes);
}

fn everything(bytes: &[u8]) {
    exchange_and_monitor(bytes);
    bureau(bytes);
    replies(bytes);
}

// ---------------------------------------------------------------------------------------------
// Byte generators
// ---------------------------------------------------------------------------------------------

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(field: u32, wire_type: u8, out: &mut Vec<u8>) {
    varint((u64::from(field) << 3) | u64::from(wire_type), out);
}

fn length_delimited(field: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    key(field, 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Integers at the edges: zero, the money maximum and one past it, every type's maximum,
/// negative `int32`s (10-byte varints).
fn hostile_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(MONEY_MAX_FEN),
        Just(MONEY_MAX_FEN + 1),
        Just(u64::from(u32::MAX)),
        Just(u64::from(u32::MAX) + 1),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        Just(-1i64 as u64),
        any::<u64>(),
    ]
}

/// One protobuf field of any wire type, with nested messages three deep; field numbers cover
/// every field our messages have (and some they do not).
fn field() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        (1u32..20, hostile_u64()).prop_map(|(field, value)| {
            let mut out = Vec::new();
            key(field, 0, &mut out);
            varint(value, &mut out);
            out
        }),
        (1u32..20, any::<u64>()).prop_map(|(field, value)| {
            let mut out = Vec::new();
            key(field, 1, &mut out);
            out.extend_from_slice(&value.to_le_bytes());
            out
        }),
        (1u32..20, any::<u32>()).prop_map(|(field, value)| {
            let mut out = Vec::new();
            key(field, 5, &mut out);
            out.extend_from_slice(&value.to_le_bytes());
            out
        }),
        (1u32..20, "\\PC{0,24}").prop_map(|(field, text)| length_delimited(field, text.as_bytes())),
        (1u32..20, "[0-9]{17}[0-9X]").prop_map(|(field, text)| length_delimited(field, text.as_bytes())),
        (1u32..20, proptest::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(field, bytes)| length_delimited(field, &bytes)),
        // A key alone, a group start or end, or a length past the end.
        (1u32..20, 0u8..8).prop_map(|(field, wire_type)| {
            let mut out = Vec::new();
            key(field, wire_type, &mut out);
            out
        }),
    ];
    leaf.prop_recursive(3, 96, 8, |inner| {
        (1u32..20, proptest::collection::vec(inner, 0..8))
            .prop_map(|(field, fields)| length_delimited(field, &fields.concat()))
    })
}

/// A message-shaped byte string, sometimes cut short.
fn protobuf_shaped() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(field(), 0..12),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(fields, cut, truncate)| {
            let mut bytes = fields.concat();
            if truncate && !bytes.is_empty() {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        })
}

/// A valid encoding of something the node receives or its clients decode.
fn valid_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        strategies::peer_message().prop_map(|message| pb::PeerMessage::from(message).encode_to_vec()),
        proptest::collection::vec(strategies::peer_message(), 0..4).prop_map(|messages| {
            exchange_proto::peer_batches_to_wire(messages)
                .into_iter()
                .next()
                .unwrap_or_default()
                .encode_to_vec()
        }),
        strategies::client_request().prop_map(|request| match BureauRequest::from(request) {
            BureauRequest::OpenAccount(m) => m.encode_to_vec(),
            BureauRequest::Credit(m) => m.encode_to_vec(),
            BureauRequest::Freeze(m) => m.encode_to_vec(),
            BureauRequest::Unfreeze(m) => m.encode_to_vec(),
            BureauRequest::CloseAccount(m) => m.encode_to_vec(),
            BureauRequest::Bind(m) => m.encode_to_vec(),
            BureauRequest::Unbind(m) => m.encode_to_vec(),
            BureauRequest::Settle(m) => m.encode_to_vec(),
            BureauRequest::Refund(m) => m.encode_to_vec(),
            BureauRequest::SetOrder(m) => m.encode_to_vec(),
            BureauRequest::SetLimits(m) => m.encode_to_vec(),
            BureauRequest::Cancel(m) => m.encode_to_vec(),
            BureauRequest::Reverse(m) => m.encode_to_vec(),
            BureauRequest::Transfer(m) => m.encode_to_vec(),
        }),
        strategies::receipt().prop_map(|receipt| pb::Receipt::from(receipt).encode_to_vec()),
        strategies::binding().prop_map(|binding| pb::Binding::from(binding).encode_to_vec()),
        (strategies::journal_entry(), any::<u64>())
            .prop_map(|(entry, seq)| pb::FeedEvent::journal(seq, entry).encode_to_vec()),
    ]
}

/// Byte edits: overwrite, insert, delete, or cut.
#[derive(Clone, Debug)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Cut(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<prop::sample::Index>(), field()).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<prop::sample::Index>(), 1usize..8).prop_map(|(at, len)| Edit::Delete(at, len)),
        any::<prop::sample::Index>().prop_map(Edit::Cut),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len();
    match edit {
        Edit::Set(at, byte) if len > 0 => {
            let at = at.index(len);
            bytes[at] = *byte;
        }
        Edit::Insert(at, inserted) => {
            let at = at.index(len + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Edit::Delete(at, count) if len > 0 => {
            let at = at.index(len);
            bytes.drain(at..(at + count).min(len));
        }
        Edit::Cut(at) if len > 0 => bytes.truncate(at.index(len)),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Uniform random bytes through every decode and conversion.
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        everything(&bytes);
    }

    /// Bytes shaped like protobuf (right keys, nested messages, edge integers, cut short)
    /// reach the conversions far more often than uniform bytes do.
    #[test]
    fn protobuf_shaped_bytes(bytes in protobuf_shaped()) {
        everything(&bytes);
    }

    /// Valid encodings with a few edits: the conversions' checks one field at a time.
    #[test]
    fn mutated_valid_encodings(
        mut bytes in valid_encoding(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        for edit in &edits {
            apply(&mut bytes, edit);
        }
        everything(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Structured but hostile values
// ---------------------------------------------------------------------------------------------

/// Strings at and past the limits: empty, ids that almost parse, the longest text allowed and
/// one byte more, far longer ones, control characters and other scripts.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => short_hostile_string(),
        1 => (0usize..200_000).prop_map(|len| "x".repeat(len)),
    ]
}

/// [`hostile_string`] without the very long ones (for the messages of big batches).
fn short_hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{17}[0-9Xx]",
        "[0-9]{6}-[0-9]{1,20}",
        "[A-Za-z0-9._:-]{1,70}",
        "\\PC{0,40}",
        "[\\x00-\\x1f\\x7f]{1,8}",
        Just("a".repeat(TEXT_FIELD_LEN_MAX)),
        Just("a".repeat(TEXT_FIELD_LEN_MAX + 1)),
        Just("界".repeat(TEXT_FIELD_LEN_MAX / 3 + 1)),
    ]
}

/// Enum values: every known one, zero (unspecified), and any other `int32`.
fn hostile_enum() -> impl Strategy<Value = i32> {
    prop_oneof![0i32..20, Just(i32::MIN), Just(i32::MAX), Just(-1), any::<i32>()]
}

/// Province and region codes: real ones, near misses, and any `uint32`.
fn hostile_code() -> impl Strategy<Value = u32> {
    prop_oneof![
        strategies::province().prop_map(|province| province.code()),
        strategies::region().prop_map(|region| region.code()),
        Just(0u32),
        Just(110_001),
        Just(710_000),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

fn hostile_leg() -> impl Strategy<Value = Option<pb::LegId>> {
    proptest::option::weighted(
        0.9,
        (
            hostile_code(),
            short_hostile_string(),
            any::<u32>(),
            prop_oneof![Just(0u32), Just(65_535), Just(65_536), any::<u32>()],
            short_hostile_string(),
            any::<bool>(),
        )
            .prop_map(|(coordinator, settlement, attempt, index, account, pay)| pb::LegId {
                coordinator,
                scope: Some(if pay {
                    pb::leg_id::Scope::Pay(pb::PayScope { settlement, attempt })
                } else {
                    pb::leg_id::Scope::Refund(pb::RefundScope {
                        refund: settlement.clone(),
                        settlement,
                    })
                }),
                index,
                account,
            }),
    )
}

fn hostile_peer_message() -> impl Strategy<Value = pb::PeerMessage> {
    use pb::peer_message::Message as Wire;
    prop_oneof![
        Just(pb::PeerMessage { message: None }),
        (
            hostile_leg(),
            short_hostile_string(),
            short_hostile_string(),
            hostile_u64(),
            any::<u64>()
        )
            .prop_map(
                |(leg, binding, patient, amount_max_fen, hold_timeout_ms)| pb::PeerMessage {
                    message: Some(Wire::Prepare(pb::Prepare {
                        leg,
                        binding: Some(binding),
                        patient,
                        amount_max_fen,
                        hold_timeout_ms,
                    })),
                }
            ),
        (hostile_leg(), hostile_u64()).prop_map(|(leg, amount_fen)| pb::PeerMessage {
            message: Some(Wire::Commit(pb::Commit { leg, amount_fen })),
        }),
        (hostile_leg(), hostile_enum()).prop_map(|(leg, reason)| pb::PeerMessage {
            message: Some(Wire::Vote(pb::Vote {
                leg,
                vote: Some(pb::vote::Vote::No(pb::vote::No { reason })),
            })),
        }),
        (short_hostile_string(), hostile_enum()).prop_map(|(binding, code)| pb::PeerMessage {
            message: Some(Wire::Registered(pb::Registered {
                binding,
                registration: Some(pb::registered::Registration::Refused(pb::registered::Refused { code })),
            })),
        }),
        strategies::peer_message().prop_map(pb::PeerMessage::from),
    ]
}

fn hostile_settle() -> impl Strategy<Value = pb::SettleRequest> {
    (
        (hostile_string(), hostile_string(), hostile_u64(), hostile_u64()),
        (hostile_u64(), hostile_string(), hostile_code(), hostile_code()),
    )
        .prop_map(
            |(
                (settlement, patient, total_fee_fen, fund_paid_fen),
                (self_pay_fen, institution, treatment_region, insured_region),
            )| pb::SettleRequest {
                settlement,
                patient,
                total_fee_fen,
                fund_paid_fen,
                self_pay_fen,
                institution,
                treatment_region,
                insured_region,
            },
        )
}

fn hostile_bind() -> impl Strategy<Value = pb::BindRequest> {
    (
        (
            hostile_string(),
            hostile_string(),
            hostile_code(),
            hostile_enum(),
            hostile_enum(),
        ),
        (
            proptest::option::of((proptest::option::of(hostile_u64()), proptest::option::of(hostile_u64()))),
            proptest::option::of((hostile_enum(), hostile_string(), any::<bool>(), any::<bool>())),
        ),
    )
        .prop_map(
            |((grantor, grantee, grantee_province, relation, kind), (limits, evidence))| pb::BindRequest {
                grantor,
                grantee,
                grantee_province,
                relation,
                kind,
                limits: limits.map(|(per_settlement_fen, monthly_fen)| pb::Limits {
                    per_settlement_fen,
                    monthly_fen,
                }),
                evidence: evidence.map(|(document, reference, face_verified, commitment_signed)| pb::Evidence {
                    document,
                    reference,
                    face_verified,
                    commitment_signed,
                }),
            },
        )
}

/// The text fields a request carries, longest first: a text above the wire's limit must be
/// refused, never stored.
fn over_long(texts: &[&str]) -> bool {
    texts.iter().any(|text| text.len() > TEXT_FIELD_LEN_MAX)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Batches of up to 600 messages, valid and hostile mixed: the count before decoding
    /// agrees with the batch, more than the maximum is refused whole (before decoding on the
    /// server), and an accepted batch round-trips.
    #[test]
    fn hostile_peer_batches(
        distinct in proptest::collection::vec(hostile_peer_message(), 1..24),
        len in prop_oneof![0usize..=600, Just(PEER_BATCH_MESSAGES_MAX), Just(PEER_BATCH_MESSAGES_MAX + 1)],
        empty_tail in any::<bool>(),
    ) {
        // Up to 600 messages cycling through a few hostile ones (generating 600 distinct ones
        // costs more than the check), optionally ending in empty (2-byte) messages.
        let mut messages: Vec<pb::PeerMessage> = distinct.iter().cycle().take(len).cloned().collect();
        if empty_tail {
            for message in messages.iter_mut().skip(len / 2) {
                message.message = None;
            }
        }
        let batch = pb::PeerBatch { messages };
        let bytes = batch.encode_to_vec();
        let len = batch.messages.len();
        match peer_batch_len_of_encoded(&bytes) {
            Ok(count) => prop_assert!(count == len && len <= PEER_BATCH_MESSAGES_MAX),
            Err(error) => {
                prop_assert!(len > PEER_BATCH_MESSAGES_MAX, "{error}");
                prop_assert_eq!(error.field.as_str(), "messages");
            }
        }
        match peer_batch_from_wire(batch.clone()) {
            Ok(converted) => {
                prop_assert!(len <= PEER_BATCH_MESSAGES_MAX);
                let again = exchange_proto::peer_batches_to_wire(converted.clone());
                let back: Vec<PeerMessage> = again
                    .into_iter()
                    .flat_map(|batch| peer_batch_from_wire(batch).unwrap())
                    .collect();
                prop_assert_eq!(back, converted);
            }
            Err(error) => {
                refusal_is_reported(&error);
                prop_assert!(error.field.starts_with("messages"), "{error}");
            }
        }
    }

    /// Settlements with edge amounts, regions and over-long texts: amounts past the maximum
    /// and texts past the limit are refused by name; what is accepted round-trips.
    #[test]
    fn hostile_settlements(request in hostile_settle()) {
        let too_much = [request.total_fee_fen, request.fund_paid_fen, request.self_pay_fen]
            .iter()
            .any(|fen| *fen > MONEY_MAX_FEN);
        let too_long = over_long(&[&request.institution]);
        match ClientRequest::try_from(BureauRequest::Settle(request.clone())) {
            Ok(ClientRequest::Settle(settle)) => {
                prop_assert!(!too_much && !too_long);
                let back = SettleRequest::try_from(pb::SettleRequest::from(settle.clone()));
                prop_assert_eq!(back, Ok(settle));
            }
            Ok(other) => prop_assert!(false, "a settle request became {other:?}"),
            Err(error) => refusal_is_reported(&error),
        }
    }

    /// Bindings with unknown enums, missing parts, edge limits and long references.
    #[test]
    fn hostile_bind_requests(request in hostile_bind()) {
        let too_long = request.evidence.as_ref().is_some_and(|e| over_long(&[&e.reference]));
        match ClientRequest::try_from(BureauRequest::Bind(request.clone())) {
            Ok(ClientRequest::Bind(bind)) => {
                prop_assert!(!too_long);
                prop_assert!(request.relation != 0 && request.kind != 0);
                let back = ClientRequest::try_from(BureauRequest::from(ClientRequest::Bind(bind.clone())));
                prop_assert_eq!(back, Ok(ClientRequest::Bind(bind)));
            }
            Ok(other) => prop_assert!(false, "a bind request became {other:?}"),
            Err(error) => refusal_is_reported(&error),
        }
    }

    /// Every other bureau request with hostile fields, including a grantor order of up to 300
    /// bindings: refused by name or accepted and round-tripped.
    #[test]
    fn hostile_bureau_requests(
        texts in proptest::collection::vec(hostile_string(), 3),
        amount in hostile_u64(),
        scheme in hostile_enum(),
        order in proptest::collection::vec(
            prop_oneof![
                strategies::binding_id().prop_map(|id| id.to_string()),
                hostile_string(),
            ],
            0..300,
        ),
        limits in (proptest::option::of(hostile_u64()), proptest::option::of(hostile_u64())),
    ) {
        let [a, b, c] = [texts[0].clone(), texts[1].clone(), texts[2].clone()];
        let requests = vec![
            BureauRequest::OpenAccount(pb::OpenAccountRequest { person: a.clone(), name: b.clone(), scheme, balance_fen: amount }),
            BureauRequest::Credit(pb::CreditRequest { credit: a.clone(), person: b.clone(), amount_fen: amount }),
            BureauRequest::Freeze(pb::FreezeRequest { person: a.clone(), reason: c.clone() }),
            BureauRequest::Unfreeze(pb::UnfreezeRequest { person: a.clone() }),
            BureauRequest::CloseAccount(pb::CloseAccountRequest { person: b.clone() }),
            BureauRequest::Unbind(pb::UnbindRequest { binding: a.clone() }),
            BureauRequest::Refund(pb::RefundRequest { refund: a.clone(), settlement: b.clone(), amount_fen: Some(amount) }),
            BureauRequest::SetOrder(pb::SetOrderRequest { grantee: a.clone(), bindings: order.clone() }),
            BureauRequest::SetLimits(pb::SetLimitsRequest {
                binding: c.clone(),
                limits: Some(pb::Limits { per_settlement_fen: limits.0, monthly_fen: limits.1 }),
            }),
            BureauRequest::Cancel(pb::CancelRequest { settlement: a.clone() }),
            BureauRequest::Reverse(pb::ReverseRequest { message: c.clone() }),
        ];
        for request in requests {
            match ClientRequest::try_from(request.clone()) {
                Ok(converted) => {
                    if let BureauRequest::SetOrder(order) = &request {
                        prop_assert!(order.bindings.len() <= GRANTORS_PER_SETTLEMENT_MAX);
                    }
                    if let BureauRequest::OpenAccount(open) = &request {
                        prop_assert!(open.name.len() <= TEXT_FIELD_LEN_MAX && open.balance_fen <= MONEY_MAX_FEN);
                    }
                    if let BureauRequest::Freeze(freeze) = &request {
                        prop_assert!(freeze.reason.len() <= TEXT_FIELD_LEN_MAX);
                    }
                    let back = ClientRequest::try_from(BureauRequest::from(converted.clone()));
                    prop_assert_eq!(back, Ok(converted));
                }
                Err(error) => refusal_is_reported(&error),
            }
        }
        for (from_ms, to_ms) in [(amount as i64, amount.wrapping_add(1) as i64), (i64::MIN, i64::MAX), (0, amount as i64)] {
            let _ = pb::ClearingRequest { from_ms, to_ms }.period();
            let _ = pb::ReconcileRequest { peer: scheme as u32, from_ms, to_ms }.checked();
        }
    }

    /// Receipts and journal pages as a hostile peer or node might answer them.
    #[test]
    fn hostile_replies(
        receipt in strategies::receipt(),
        extra_parts in 0usize..100,
        rounds in any::<u32>(),
        refusal in hostile_enum(),
        entry in strategies::journal_entry(),
        kind in hostile_enum(),
        amount in hostile_u64(),
        reference in hostile_string(),
    ) {
        let mut wire = pb::Receipt::from(receipt);
        wire.rounds = rounds;
        wire.own_refusal = Some(refusal);
        if let Some(part) = wire.mutual_aid.first().cloned() {
            wire.mutual_aid.extend(std::iter::repeat_n(part, extra_parts));
        }
        match Receipt::try_from(wire.clone()) {
            Ok(receipt) => {
                prop_assert!(rounds <= u32::from(u8::MAX));
                prop_assert_eq!(Receipt::try_from(pb::Receipt::from(receipt.clone())), Ok(receipt));
            }
            Err(error) => refusal_is_reported(&error),
        }
        let mut entry = pb::JournalEntry::from(entry);
        entry.kind = kind;
        entry.amount_fen = amount;
        entry.reference = Some(reference);
        let page = pb::JournalPage {
            records: vec![pb::JournalRecord { seq: amount, entry: Some(entry.clone()), relative: None }; 3],
            scanned_to_seq: amount,
            done: false,
        };
        for record in page.records {
            match record.checked() {
                Ok((_, checked)) => {
                    prop_assert_eq!(JournalEntry::try_from(pb::JournalEntry::from(checked.clone())), Ok(checked));
                }
                Err(error) => refusal_is_reported(&error),
            }
        }
        decode_then::<pb::FeedEvent, _>(
            &pb::FeedEvent { seq: amount, event: Some(pb::feed_event::Event::Journal(entry)) }.encode_to_vec(),
            exchange_proto::feed_event_from_wire,
        );
        let _ = (RefundReceipt::try_from(pb::RefundReceipt::default()), RefundRequest::try_from(pb::RefundRequest::default()));
        let _ = Account::try_from(pb::Account { balance_fen: amount, held_fen: amount.wrapping_add(1), ..Default::default() });
    }
}

/// The batch that motivated counting before decoding: 4 MiB of empty messages (2 bytes each)
/// would decode to some 2 million messages of about 200 bytes. It is refused from its bytes,
/// after reading at most one message past the limit.
#[test]
fn a_batch_of_millions_of_empty_messages_is_refused_before_decoding() {
    let bytes: Vec<u8> = std::iter::repeat_n([0x0a_u8, 0x00], 2 * 1024 * 1024)
        .flatten()
        .collect();
    let error = peer_batch_len_of_encoded(&bytes).unwrap_err();
    assert_eq!(error.field, "messages");
    assert!(error.reason.contains(&PEER_BATCH_MESSAGES_MAX.to_string()), "{error}");
    // Exactly at the limit passes; malformed encodings are refused.
    assert_eq!(
        peer_batch_len_of_encoded(&bytes[..2 * PEER_BATCH_MESSAGES_MAX]),
        Ok(PEER_BATCH_MESSAGES_MAX)
    );
    for malformed in [&[0x0a_u8][..], &[0x0a, 0x05, 0x00], &[0x00, 0x00], &[0x0b], &[0xff; 11]] {
        assert_eq!(peer_batch_len_of_encoded(malformed).unwrap_err().field, "batch");
    }
    assert_eq!(peer_batch_len_of_encoded(&[]), Ok(0));
}
