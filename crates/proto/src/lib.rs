//! gRPC wire types of the exchange, generated from `proto/exchange.proto`, and their conversions.
//!
//! The generated types live in [`pb`]. Everything that crosses the wire converts to the core's
//! types with `TryFrom<pb::X> for core::X`, which checks every id, amount and region with the
//! core's own constructors and names the bad field in a [`ConvertError`]; the way back is an
//! infallible `From<core::X> for pb::X`. No conversion panics on any input.
//!
//! Architecture invariant: this crate decides nothing. It only translates and validates; the
//! protocol's decisions stay in `exchange-core`.

// Wire input is hostile until converted: no conversion may panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]

/// Code generated at build time by tonic-prost-build (package `exchange.v1`).
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("exchange.v1");
}

mod bureau;
mod clearing;
mod common;
mod error;
mod fields;
mod monitor;
mod peer;
pub mod service;
pub mod status;

pub use bureau::{BureauReply, BureauRequest, bureau_reply_to_wire};
pub use clearing::PERIOD_LEN_MAX_MS;
pub use common::{
    binding_kind_from_wire, binding_kind_to_wire, document_kind_from_wire, document_kind_to_wire, refusal_from_wire,
    refusal_to_wire, relation_from_wire, relation_to_wire, scheme_from_wire, scheme_to_wire,
};
pub use error::{ConvertError, ConvertResult};
pub use fields::TEXT_FIELD_LEN_MAX;
pub use monitor::{FEED_SUBSCRIBER_QUEUE_MAX, FeedItem, feed_event_from_wire};
pub use peer::{PEER_BATCH_MESSAGES_MAX, peer_batch_from_wire, peer_batch_len_of_encoded, peer_batches_to_wire};
pub use service::MESSAGE_SIZE_MAX_BYTES;

/// The encoded `FileDescriptorSet` of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exchange_descriptor.bin"));
