//! Validation at the edge: bad fields are named precisely, limits hold, errors map to statuses.

use exchange_core::message::PeerMessage;
use exchange_core::{ClientError, ErrorKind};
use exchange_proto::status::{REASON_METADATA_KEY, client_error_to_status, status_to_client_error};
use exchange_proto::{ConvertError, PEER_BATCH_MESSAGES_MAX, pb, peer_batch_from_wire};

fn pay_leg(coordinator: u32, index: u32) -> pb::LegId {
    pb::LegId {
        coordinator,
        scope: Some(pb::leg_id::Scope::Pay(pb::PayScope {
            settlement: "S-1".into(),
            attempt: 0,
        })),
        index,
        account: "11010519491231002X".into(),
    }
}

fn abort(leg: pb::LegId) -> pb::PeerMessage {
    pb::PeerMessage {
        message: Some(pb::peer_message::Message::Abort(pb::Abort { leg: Some(leg) })),
    }
}

#[test]
fn a_bad_field_is_named_by_its_path() {
    let batch = pb::PeerBatch {
        messages: vec![
            abort(pay_leg(500_000, 0)),
            pb::PeerMessage {
                message: Some(pb::peer_message::Message::Vote(pb::Vote {
                    leg: Some(pay_leg(710_000, 0)),
                    vote: None,
                })),
            },
        ],
    };
    let error = peer_batch_from_wire(batch).unwrap_err();
    assert_eq!(error.field, "messages[1].vote.leg.coordinator");
    assert!(error.reason.contains("710000"), "{error}");

    let error = PeerMessage::try_from(abort(pay_leg(500_000, 70_000))).unwrap_err();
    assert_eq!(error.field, "abort.leg.index");

    let error = PeerMessage::try_from(pb::PeerMessage { message: None }).unwrap_err();
    assert_eq!(error, ConvertError::missing("message"));
}

#[test]
fn unspecified_and_unknown_enum_values_are_refused() {
    let vote = |reason: i32| pb::PeerMessage {
        message: Some(pb::peer_message::Message::Vote(pb::Vote {
            leg: Some(pay_leg(500_000, 1)),
            vote: Some(pb::vote::Vote::No(pb::vote::No { reason })),
        })),
    };
    assert_eq!(PeerMessage::try_from(vote(0)).unwrap_err().field, "vote.no.reason");
    assert_eq!(PeerMessage::try_from(vote(999)).unwrap_err().field, "vote.no.reason");
    assert!(PeerMessage::try_from(vote(pb::Refusal::LimitReached as i32)).is_ok());
}

#[test]
fn money_and_persons_are_checked() {
    let mut request = pb::SettleRequest {
        settlement: "S-1".into(),
        patient: "11010519491231002X".into(),
        total_fee_fen: 100,
        fund_paid_fen: 0,
        self_pay_fen: 100,
        institution: "H1".into(),
        treatment_region: 500_100,
        insured_region: 110_000,
    };
    assert!(exchange_core::records::SettleRequest::try_from(request.clone()).is_ok());
    request.self_pay_fen = u64::MAX;
    let error = exchange_core::records::SettleRequest::try_from(request.clone()).unwrap_err();
    assert_eq!(error.field, "self_pay_fen");
    request.self_pay_fen = 1;
    request.patient = "110105194912310021".into();
    let error = exchange_core::records::SettleRequest::try_from(request).unwrap_err();
    assert_eq!(error.field, "patient");
}

#[test]
fn oversized_batches_are_refused_whole() {
    let batch = pb::PeerBatch {
        messages: vec![abort(pay_leg(500_000, 0)); PEER_BATCH_MESSAGES_MAX + 1],
    };
    assert_eq!(peer_batch_from_wire(batch).unwrap_err().field, "messages");
    let batches = exchange_proto::peer_batches_to_wire(vec![
        PeerMessage::try_from(abort(pay_leg(500_000, 0))).unwrap();
        PEER_BATCH_MESSAGES_MAX * 2 + 1
    ]);
    assert_eq!(
        batches.iter().map(|batch| batch.messages.len()).collect::<Vec<_>>(),
        vec![PEER_BATCH_MESSAGES_MAX, PEER_BATCH_MESSAGES_MAX, 1]
    );
}

#[test]
fn client_errors_travel_as_statuses_and_back() {
    let error = ClientError::new(
        ErrorKind::FailedPrecondition,
        "account_frozen",
        "account 11010519491231002X is frozen",
    );
    let status = client_error_to_status(&error);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.metadata().get(REASON_METADATA_KEY).unwrap(), "account_frozen");
    assert!(status.message().ends_with("(account_frozen)"));
    assert_eq!(status_to_client_error(&status), Some(error));
    assert_eq!(status_to_client_error(&tonic::Status::unavailable("down")), None);

    let status = tonic::Status::from(ConvertError::new("patient", "bad"));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.metadata().get(REASON_METADATA_KEY).unwrap(), "invalid_field");
}

#[test]
fn reflection_and_health_services_build() {
    assert!(!exchange_proto::FILE_DESCRIPTOR_SET.is_empty());
    exchange_proto::service::reflection_service().unwrap();
    exchange_proto::service::reflection_service_v1alpha().unwrap();
    let (_reporter, _health) = exchange_proto::service::health_service();
}
