//! One peer link per remote province: a bounded queue, batching into one RPC at a time over one
//! HTTP/2 channel, reconnection with backoff, and keep-alive so a silent partition is noticed.

use std::collections::VecDeque;
use std::time::Duration;

use exchange_core::Province;
use exchange_core::message::PeerMessage;
use exchange_proto::pb::exchange_client::ExchangeClient;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::context::Context;

/// First retry delay after a failed batch, doubled up to `RETRY_DELAY_MAX_MS`.
pub const RETRY_DELAY_MIN_MS: u64 = 50;
pub const RETRY_DELAY_MAX_MS: u64 = 2_000;
/// HTTP/2 keep-alive ping interval and how long a ping may go unanswered.
pub const KEEPALIVE_INTERVAL_MS: u64 = 2_000;
pub const KEEPALIVE_TIMEOUT_MS: u64 = 2_000;

#[derive(Debug)]
pub enum PeerMsg {
    Send(PeerMessage),
    /// The RPC carrying `batch` finished (`error` says why when it failed).
    Done {
        ok: bool,
        batch: Vec<PeerMessage>,
        error: String,
    },
    /// Backoff over: try again.
    Retry,
}

#[derive(Debug)]
pub struct PeerLink;

#[derive(Debug)]
pub struct PeerArgs {
    pub ctx: Context,
    pub province: Province,
    /// The client of the peer's `Exchange` service, over the channel of [`peer_client`].
    pub client: ExchangeClient<Channel>,
}

/// The one HTTP/2 channel to a peer province's node, shared by its link (the protocol's
/// messages) and by queries (reconciliation): lazy, so it comes up when the peer does and
/// reconnects by itself; keep-alive, so a silent partition is noticed.
pub fn peer_client(
    address: &str,
    tls: ClientTlsConfig,
    connect_timeout_ms: u64,
) -> Result<ExchangeClient<Channel>, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_millis(connect_timeout_ms))
        .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(KEEPALIVE_TIMEOUT_MS))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    Ok(ExchangeClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(exchange_proto::MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(exchange_proto::MESSAGE_SIZE_MAX_BYTES))
}

#[derive(Debug)]
pub struct PeerState {
    ctx: Context,
    province: Province,
    label: String,
    client: ExchangeClient<Channel>,
    queue: VecDeque<PeerMessage>,
    in_flight: bool,
    waiting_retry: bool,
    retry_delay_ms: u64,
}

impl PeerState {
    fn start_batch(&mut self, myself: &ActorRef<PeerMsg>) {
        if self.in_flight || self.waiting_retry || self.queue.is_empty() {
            return;
        }
        let take = self.queue.len().min(self.ctx.config.tuning.peer_batch_max);
        let batch: Vec<PeerMessage> = self.queue.drain(..take).collect();
        self.in_flight = true;
        let mut client = self.client.clone();
        let myself = myself.clone();
        let timeout = Duration::from_millis(self.ctx.config.tuning.rpc_timeout_ms);
        tokio::spawn(async move {
            let mut ok = true;
            let mut error = String::new();
            for wire in exchange_proto::peer_batches_to_wire(batch.clone()) {
                let mut request = tonic::Request::new(wire);
                request.set_timeout(timeout);
                if let Err(status) = client.deliver(request).await {
                    tracing::debug!(code = ?status.code(), message = status.message(), "peer batch failed");
                    ok = false;
                    error = format!("{:?}: {}", status.code(), status.message());
                    break;
                }
            }
            let _stopped = myself.cast(PeerMsg::Done { ok, batch, error });
        });
    }

    fn enqueue(&mut self, message: PeerMessage) {
        if self.queue.len() >= self.ctx.config.tuning.peer_queue_max {
            // The oldest message is the likeliest to be stale; every message is retried by
            // the protocol (resends, queries), so dropping loses time, never money.
            self.queue.pop_front();
            self.ctx
                .metrics
                .peer(&self.ctx.metrics.peer_messages_dropped, &self.label, 1);
        }
        self.queue.push_back(message);
    }
}

impl Actor for PeerLink {
    type Msg = PeerMsg;
    type State = PeerState;
    type Arguments = PeerArgs;

    async fn pre_start(&self, _myself: ActorRef<PeerMsg>, args: PeerArgs) -> Result<PeerState, ActorProcessingErr> {
        let client = args.client;
        let label = args.province.to_string();
        args.ctx.metrics.link_up(&label, false);
        Ok(PeerState {
            ctx: args.ctx,
            province: args.province,
            label,
            client,
            queue: VecDeque::new(),
            in_flight: false,
            waiting_retry: false,
            retry_delay_ms: RETRY_DELAY_MIN_MS,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PeerMsg>,
        message: PeerMsg,
        state: &mut PeerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PeerMsg::Send(message) => {
                state.enqueue(message);
                let queued = state.queue.len();
                state.ctx.set_link(state.province, |link| link.queued = queued);
            }
            PeerMsg::Done { ok: true, batch, .. } => {
                state.in_flight = false;
                state.retry_delay_ms = RETRY_DELAY_MIN_MS;
                state.ctx.metrics.link_up(&state.label, true);
                state.ctx.set_link(state.province, |link| {
                    link.up = true;
                    link.last_error.clear();
                    link.down_since_wall_ms = None;
                });
                let sent = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                state
                    .ctx
                    .metrics
                    .peer(&state.ctx.metrics.peer_messages_sent, &state.label, sent);
            }
            PeerMsg::Done {
                ok: false,
                batch,
                error,
            } => {
                state.in_flight = false;
                state.ctx.metrics.link_up(&state.label, false);
                let now_ms = state.ctx.clock.now().wall_ms;
                state.ctx.set_link(state.province, |link| {
                    link.up = false;
                    link.last_error = error;
                    link.down_since_wall_ms.get_or_insert(now_ms);
                });
                state
                    .ctx
                    .metrics
                    .peer(&state.ctx.metrics.peer_batches_failed, &state.label, 1);
                // Put the batch back in front: same order, sent again after the backoff.
                for message in batch.into_iter().rev() {
                    state.queue.push_front(message);
                }
                while state.queue.len() > state.ctx.config.tuning.peer_queue_max {
                    state.queue.pop_front();
                    state
                        .ctx
                        .metrics
                        .peer(&state.ctx.metrics.peer_messages_dropped, &state.label, 1);
                }
                state.waiting_retry = true;
                let delay = Duration::from_millis(state.retry_delay_ms);
                state.retry_delay_ms = state.retry_delay_ms.saturating_mul(2).min(RETRY_DELAY_MAX_MS);
                tracing::debug!(peer = %state.province, ?delay, queued = state.queue.len(), "peer unreachable; retrying");
                myself.send_after(delay, || PeerMsg::Retry);
            }
            PeerMsg::Retry => state.waiting_retry = false,
        }
        state.start_batch(&myself);
        Ok(())
    }
}
