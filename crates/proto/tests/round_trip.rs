//! Round trips core → proto → bytes → proto → core, and decoding arbitrary bytes never panics.

mod strategies;

use exchange_core::message::{ClientReply, ClientRequest, PeerMessage};
use exchange_core::records::{JournalEntry, Receipt, RefundReceipt, RefundRequest, SettleRequest};
use exchange_core::{Account, Binding};
use exchange_proto::{BureauReply, BureauRequest, ConvertError, bureau_reply_to_wire, pb};
use proptest::prelude::*;
use prost::Message;

/// core → wire message → bytes → wire message → core.
fn through_bytes<C, P>(value: C) -> Result<C, ConvertError>
where
    P: Message + Default + From<C>,
    C: TryFrom<P, Error = ConvertError>,
{
    let bytes = P::from(value).encode_to_vec();
    let decoded = P::decode(bytes.as_slice()).expect("our own encoding decodes");
    C::try_from(decoded)
}

fn bureau_request_through_bytes(request: ClientRequest) -> Result<ClientRequest, ConvertError> {
    fn again<P: Message + Default>(message: P) -> P {
        P::decode(message.encode_to_vec().as_slice()).expect("our own encoding decodes")
    }
    let wire = match BureauRequest::from(request) {
        BureauRequest::OpenAccount(m) => BureauRequest::OpenAccount(again(m)),
        BureauRequest::Credit(m) => BureauRequest::Credit(again(m)),
        BureauRequest::Freeze(m) => BureauRequest::Freeze(again(m)),
        BureauRequest::Unfreeze(m) => BureauRequest::Unfreeze(again(m)),
        BureauRequest::CloseAccount(m) => BureauRequest::CloseAccount(again(m)),
        BureauRequest::Bind(m) => BureauRequest::Bind(again(m)),
        BureauRequest::Unbind(m) => BureauRequest::Unbind(again(m)),
        BureauRequest::Settle(m) => BureauRequest::Settle(again(m)),
        BureauRequest::Refund(m) => BureauRequest::Refund(again(m)),
        BureauRequest::SetOrder(m) => BureauRequest::SetOrder(again(m)),
        BureauRequest::SetLimits(m) => BureauRequest::SetLimits(again(m)),
        BureauRequest::Cancel(m) => BureauRequest::Cancel(again(m)),
        BureauRequest::Reverse(m) => BureauRequest::Reverse(again(m)),
        BureauRequest::Transfer(m) => BureauRequest::Transfer(again(m)),
    };
    ClientRequest::try_from(wire)
}

fn bureau_reply_through_bytes(reply: ClientReply) -> Result<ClientReply, ConvertError> {
    fn again<P: Message + Default>(message: P) -> P {
        P::decode(message.encode_to_vec().as_slice()).expect("our own encoding decodes")
    }
    let wire = match bureau_reply_to_wire(reply).expect("not an error reply") {
        BureauReply::Account(m) => BureauReply::Account(again(m)),
        BureauReply::Credited(m) => BureauReply::Credited(again(m)),
        BureauReply::Bound(m) => BureauReply::Bound(again(m)),
        BureauReply::Unbound(m) => BureauReply::Unbound(again(m)),
        BureauReply::Settled(m) => BureauReply::Settled(again(m)),
        BureauReply::Refunded(m) => BureauReply::Refunded(again(m)),
        BureauReply::Ordered(m) => BureauReply::Ordered(again(m)),
        BureauReply::LimitsSet(m) => BureauReply::LimitsSet(again(m)),
        BureauReply::Transferred(m) => BureauReply::Transferred(again(m)),
    };
    ClientReply::try_from(wire)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn peer_messages_round_trip(message in strategies::peer_message()) {
        prop_assert_eq!(through_bytes::<PeerMessage, pb::PeerMessage>(message.clone()), Ok(message));
    }

    #[test]
    fn peer_batches_round_trip(messages in proptest::collection::vec(strategies::peer_message(), 0..8)) {
        let batches = exchange_proto::peer_batches_to_wire(messages.clone());
        let mut back = Vec::new();
        for batch in batches {
            let decoded = pb::PeerBatch::decode(batch.encode_to_vec().as_slice()).unwrap();
            back.extend(exchange_proto::peer_batch_from_wire(decoded).unwrap());
        }
        prop_assert_eq!(back, messages);
    }

    #[test]
    fn bindings_round_trip(binding in strategies::binding()) {
        prop_assert_eq!(through_bytes::<Binding, pb::Binding>(binding.clone()), Ok(binding));
    }

    #[test]
    fn settle_requests_round_trip(request in strategies::settle_request()) {
        prop_assert_eq!(through_bytes::<SettleRequest, pb::SettleRequest>(request.clone()), Ok(request));
    }

    #[test]
    fn receipts_round_trip(receipt in strategies::receipt()) {
        prop_assert_eq!(through_bytes::<Receipt, pb::Receipt>(receipt.clone()), Ok(receipt));
    }

    #[test]
    fn refunds_round_trip(request in strategies::refund_request(), receipt in strategies::refund_receipt()) {
        prop_assert_eq!(through_bytes::<RefundRequest, pb::RefundRequest>(request.clone()), Ok(request));
        prop_assert_eq!(through_bytes::<RefundReceipt, pb::RefundReceipt>(receipt.clone()), Ok(receipt));
    }

    #[test]
    fn accounts_round_trip(account in strategies::account()) {
        prop_assert_eq!(through_bytes::<Account, pb::Account>(account.clone()), Ok(account));
    }

    #[test]
    fn journal_entries_round_trip(entry in strategies::journal_entry(), seq in any::<u64>()) {
        prop_assert_eq!(through_bytes::<JournalEntry, pb::JournalEntry>(entry.clone()), Ok(entry.clone()));
        let event = pb::FeedEvent::journal(seq, entry.clone());
        let decoded = pb::FeedEvent::decode(event.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(
            exchange_proto::feed_event_from_wire(decoded),
            Ok((seq, exchange_proto::FeedItem::Journal(entry)))
        );
    }

    #[test]
    fn client_requests_round_trip(request in strategies::client_request()) {
        prop_assert_eq!(bureau_request_through_bytes(request.clone()), Ok(request));
    }

    #[test]
    fn client_replies_round_trip(reply in strategies::client_reply()) {
        prop_assert_eq!(bureau_reply_through_bytes(reply.clone()), Ok(reply));
    }
}

/// Decodes `bytes` as `P` and converts to `C`; only a panic can fail this.
fn decode_and_convert<P, C>(bytes: &[u8])
where
    P: Message + Default,
    C: TryFrom<P, Error = ConvertError>,
{
    if let Ok(message) = P::decode(bytes) {
        let _ = C::try_from(message);
    }
}

fn decode_everything(bytes: &[u8]) {
    decode_and_convert::<pb::PeerMessage, PeerMessage>(bytes);
    decode_and_convert::<pb::Binding, Binding>(bytes);
    decode_and_convert::<pb::SettleRequest, SettleRequest>(bytes);
    decode_and_convert::<pb::Receipt, Receipt>(bytes);
    decode_and_convert::<pb::RefundRequest, RefundRequest>(bytes);
    decode_and_convert::<pb::RefundReceipt, RefundReceipt>(bytes);
    decode_and_convert::<pb::Account, Account>(bytes);
    decode_and_convert::<pb::JournalEntry, JournalEntry>(bytes);
    if let Ok(batch) = pb::PeerBatch::decode(bytes) {
        let _ = exchange_proto::peer_batch_from_wire(batch);
    }
    if let Ok(event) = pb::FeedEvent::decode(bytes) {
        let _ = exchange_proto::feed_event_from_wire(event);
    }
    if let Ok(bind) = pb::BindRequest::decode(bytes) {
        let _ = ClientRequest::try_from(BureauRequest::Bind(bind));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Fuzz-style: arbitrary bytes never make decoding or conversion panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    /// Mutated valid encodings reach deeper into the conversions than random bytes do.
    #[test]
    fn mutated_messages_never_panic(
        message in strategies::peer_message(),
        receipt in strategies::receipt(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for mut bytes in [pb::PeerMessage::from(message).encode_to_vec(), pb::Receipt::from(receipt).encode_to_vec()] {
            if bytes.is_empty() {
                continue;
            }
            for (index, value) in &flips {
                let at = index.index(bytes.len());
                bytes[at] = *value;
            }
            decode_everything(&bytes);
        }
    }
}
