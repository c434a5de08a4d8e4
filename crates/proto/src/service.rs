//! Serving helpers: the generated servers with the message-size limits applied, gRPC health
//! checking and reflection (so that `grpcurl` can list and call the services).

use std::sync::Arc;

use prost::Message as _;
use prost::bytes::Buf as _;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};

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

/// The node-to-node service, with the message-size limits, and `Deliver` batches counted
/// before they are decoded (see [`CheckedExchangeServer`]).
pub fn exchange_server<T: Exchange>(service: T) -> CheckedExchangeServer<T> {
    let service = Arc::new(service);
    CheckedExchangeServer {
        inner: ExchangeServer::from_arc(service.clone())
            .max_decoding_message_size(MESSAGE_SIZE_MAX_BYTES)
            .max_encoding_message_size(MESSAGE_SIZE_MAX_BYTES),
        service,
    }
}

/// The generated `Exchange` server, except for `Deliver`, whose batch is checked with
/// [`crate::peer_batch_len_of_encoded`] before it is decoded: the message size limit alone
/// does not bound what a batch takes once decoded (about 100 times its size for a batch of
/// empty messages), so a batch above [`crate::PEER_BATCH_MESSAGES_MAX`] messages, or one that
/// is not protobuf, is refused with `INVALID_ARGUMENT` from its bytes.
#[derive(Debug)]
pub struct CheckedExchangeServer<T> {
    inner: ExchangeServer<T>,
    service: Arc<T>,
}

impl<T> Clone for CheckedExchangeServer<T> {
    fn clone(&self) -> Self {
        CheckedExchangeServer {
            inner: self.inner.clone(),
            service: self.service.clone(),
        }
    }
}

impl<T> tonic::server::NamedService for CheckedExchangeServer<T> {
    const NAME: &'static str = <ExchangeServer<T> as tonic::server::NamedService>::NAME;
}

/// The path of `Exchange.Deliver`.
const DELIVER_PATH: &str = "/exchange.v1.Exchange/Deliver";

impl<T, B> Service<http::Request<B>> for CheckedExchangeServer<T>
where
    T: Exchange,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != DELIVER_PATH {
            return self.inner.call(request);
        }
        let service = self.service.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(CheckedBatchCodec)
                .apply_max_message_size_config(Some(MESSAGE_SIZE_MAX_BYTES), Some(MESSAGE_SIZE_MAX_BYTES));
            Ok(grpc.unary(DeliverCall(service), request).await)
        })
    }
}

/// `Exchange.Deliver` as a unary service over the checked codec.
struct DeliverCall<T>(Arc<T>);

impl<T: Exchange> tonic::server::UnaryService<pb::PeerBatch> for DeliverCall<T> {
    type Response = pb::DeliverReply;
    type Future = BoxFuture<tonic::Response<pb::DeliverReply>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<pb::PeerBatch>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { <T as Exchange>::deliver(&service, request).await })
    }
}

/// Prost's codec for `Deliver`, with the batch counted before it is decoded.
#[derive(Debug, Clone, Copy, Default)]
struct CheckedBatchCodec;

impl Codec for CheckedBatchCodec {
    type Encode = pb::DeliverReply;
    type Decode = pb::PeerBatch;
    type Encoder = tonic_prost::ProstEncoder<pb::DeliverReply>;
    type Decoder = CheckedBatchDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedBatchDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct CheckedBatchDecoder;

impl Decoder for CheckedBatchDecoder {
    type Item = pb::PeerBatch;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::PeerBatch>, tonic::Status> {
        // The buffer holds exactly one whole message (gRPC framing is done); taking it out of
        // the buffer does not copy it.
        let bytes = src.copy_to_bytes(src.remaining());
        crate::peer_batch_len_of_encoded(&bytes).map_err(tonic::Status::from)?;
        pb::PeerBatch::decode(bytes)
            .map(Some)
            .map_err(|error| tonic::Status::invalid_argument(format!("peer batch: {error}")))
    }
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
