//! Serving helpers: the generated servers with the message-size limits applied, gRPC health
//! checking and reflection (so that `grpcurl` can list and call the services).

use crate::pb;
use crate::pb::bureau_server::{Bureau, BureauServer};
use crate::pb::exchange_server::{Exchange, ExchangeServer};
use crate::pb::monitor_server::{Monitor, MonitorServer};

pub use tonic_health;
pub use tonic_health::server::HealthReporter;
pub use tonic_reflection;

/// Largest encoded message accepted or sent, in bytes. A full peer batch of
/// [`crate::PEER_BATCH_MESSAGES_MAX`] messages of a few hundred bytes each fits with room to
/// spare; anything larger is a bug or an attack and is refused before it is decoded.
pub const MESSAGE_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The full gRPC names of this crate's services, for health reporting and logs.
pub const SERVICE_NAMES: [&str; 3] = ["exchange.v1.Exchange", "exchange.v1.Bureau", "exchange.v1.Monitor"];

/// The node-to-node service, with the message-size limits.
pub fn exchange_server<T: Exchange>(service: T) -> ExchangeServer<T> {
    ExchangeServer::new(service)
        .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES)
}

/// The bureau service, with the message-size limits.
pub fn bureau_server<T: Bureau>(service: T) -> BureauServer<T> {
    BureauServer::new(service)
        .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES)
}

/// The monitor service, with the message-size limits.
pub fn monitor_server<T: Monitor>(service: T) -> MonitorServer<T> {
    MonitorServer::new(service)
        .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES)
}

/// The gRPC health service and the handle that sets each service's status
/// (`reporter.set_serving::<ExchangeServer<S>>().await`, or by name with `set_service_status`).
pub fn health_service() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// gRPC reflection (v1) over this crate's services and the health service.
pub fn reflection_service() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// gRPC reflection (v1alpha), for older `grpcurl` builds that only speak it.
pub fn reflection_service_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
}

/// Client constructors with the same limits, so both ends agree on what fits.
pub fn exchange_client(
    channel: tonic::transport::Channel,
) -> pb::exchange_client::ExchangeClient<tonic::transport::Channel> {
    pb::exchange_client::ExchangeClient::new(channel)
        .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES)
}

/// The bureau client with the message-size limits.
pub fn bureau_client(channel: tonic::transport::Channel) -> pb::bureau_client::BureauClient<tonic::transport::Channel> {
    pb::bureau_client::BureauClient::new(channel)
        .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES)
}

/// The monitor client with the message-size limits.
pub fn monitor_client(
    channel: tonic::transport::Channel,
) -> pb::monitor_client::MonitorClient<tonic::transport::Channel> {
    pb::monitor_client::MonitorClient::new(channel)
        .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES)
}
