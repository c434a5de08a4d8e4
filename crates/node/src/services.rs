//! The gRPC services of a node: `Exchange` (node to node), `Bureau` (the province's own
//! bureau and hospitals) and `Monitor` (the national monitor's feed). Each authorizes by the
//! identity in the client's certificate, converts, hands the request to the owning actor and
//! waits for the reply. Nothing is decided here.

use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use exchange_core::LedgerView;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::node::Input;
use exchange_pki::{PeerIdentity, peer_identity_of_request};
use exchange_proto::pb;
use exchange_proto::pb::bureau_server::Bureau;
use exchange_proto::pb::exchange_server::Exchange;
use exchange_proto::pb::monitor_server::Monitor;
use exchange_proto::{BureauReply, BureauRequest, bureau_reply_to_wire};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::context::Context;

/// Journal entries sent per page of the monitor feed.
pub const FEED_PAGE_LEN_MAX: usize = 512;
/// How often an idle feed looks for new journal entries and sends a health sample.
pub const FEED_POLL_MS: u64 = 250;
/// Health samples are sent at most this often on a busy feed.
pub const FEED_HEALTH_EVERY_MS: u64 = 1_000;

fn identity<T>(ctx: &Context, request: &Request<T>) -> Result<PeerIdentity, Status> {
    peer_identity_of_request(request, &ctx.revocations, SystemTime::now()).map_err(Status::from)
}

fn convert_error(error: exchange_proto::ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Node-to-node messages.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    pub ctx: Context,
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn deliver(&self, request: Request<pb::PeerBatch>) -> Result<Response<pb::DeliverReply>, Status> {
        let from = match identity(&self.ctx, &request)? {
            PeerIdentity::Node(province) if province != self.ctx.province => province,
            other => {
                return Err(Status::permission_denied(format!(
                    "{other} may not send node-to-node messages"
                )));
            }
        };
        let messages = exchange_proto::peer_batch_from_wire(request.into_inner()).map_err(convert_error)?;
        let accepted = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        for message in messages {
            // What a peer may ask is checked by the core against `from` (the certificate's
            // province), e.g. a prepare must name `from` as the leg's coordinator.
            self.ctx
                .deliver(Input::Peer { from, message })
                .map_err(|error| Status::unavailable(error.to_string()))?;
        }
        Ok(Response::new(pb::DeliverReply { accepted }))
    }

    async fn journal(&self, request: Request<pb::JournalQuery>) -> Result<Response<pb::JournalPage>, Status> {
        // A node reads only its own province's side of the legs it shares with this one.
        let peer = match identity(&self.ctx, &request)? {
            PeerIdentity::Node(province) if province != self.ctx.province => province,
            other => {
                return Err(Status::permission_denied(format!(
                    "{other} may not read a peer's journal"
                )));
            }
        };
        let ctx = self.ctx.clone();
        let query = request.into_inner();
        let page = tokio::task::spawn_blocking(move || crate::records::journal_for_peer(&ctx, peer, &query))
            .await
            .map_err(|error| Status::internal(format!("journal scan: {error}")))??;
        Ok(Response::new(page))
    }
}

/// The province's own bureau and hospitals.
#[derive(Debug, Clone)]
pub struct BureauService {
    pub ctx: Context,
}

impl BureauService {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match identity(&self.ctx, request)? {
            PeerIdentity::Bureau(province) if province == self.ctx.province => Ok(()),
            other => Err(Status::permission_denied(format!(
                "{other} may not operate the node of province {}",
                self.ctx.province
            ))),
        }
    }

    /// Runs one request through the core and waits for its reply (after its writes are durable).
    async fn call(&self, method: &'static str, request: BureauRequest) -> Result<BureauReply, Status> {
        let ctx = &self.ctx;
        if let Some(failure) = ctx.failure() {
            ctx.metrics.client_request(method, "unavailable");
            return Err(Status::unavailable(format!(
                "the node stopped acknowledging: {failure}"
            )));
        }
        if ctx.pending.len() >= ctx.config.tuning.client_requests_in_flight_max {
            ctx.metrics.client_request(method, "resource_exhausted");
            return Err(Status::resource_exhausted(
                "too many requests in flight on this node; retry shortly",
            ));
        }
        let request = ClientRequest::try_from(request).map_err(|error| {
            ctx.metrics.client_request(method, "invalid_argument");
            convert_error(error)
        })?;
        let started = Instant::now();
        let is_settlement = matches!(request, ClientRequest::Settle(_));
        let (reply_to, receiver) = ctx.pending.register();
        if let Err(error) = ctx.deliver(Input::Client { reply_to, request }) {
            ctx.pending.forget(reply_to);
            return Err(Status::unavailable(error.to_string()));
        }
        let timeout = Duration::from_millis(ctx.config.tuning.rpc_timeout_ms);
        let reply = match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => {
                ctx.metrics.client_request(method, "unavailable");
                return Err(Status::unavailable("the node dropped the request"));
            }
            Err(_) => {
                ctx.pending.forget(reply_to);
                ctx.metrics.client_request(method, "deadline_exceeded");
                return Err(Status::deadline_exceeded(
                    "no answer in time; the request may still complete — retry with the same id",
                ));
            }
        };
        if is_settlement && matches!(reply, ClientReply::Settled(_)) {
            ctx.metrics
                .settlement_latency_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let result = bureau_reply_to_wire(reply);
        ctx.metrics
            .client_request(method, if result.is_ok() { "ok" } else { "refused" });
        result
    }
}

fn wrong_reply(method: &str) -> Status {
    Status::internal(format!("the core answered {method} with an unexpected reply"))
}

macro_rules! bureau_call {
    ($self:ident, $request:ident, $method:literal, $variant:ident, $reply:ident) => {{
        $self.authorize(&$request)?;
        match $self
            .call($method, BureauRequest::$variant($request.into_inner()))
            .await?
        {
            BureauReply::$reply(reply) => Ok(Response::new(reply)),
            _ => Err(wrong_reply($method)),
        }
    }};
}

#[tonic::async_trait]
impl Bureau for BureauService {
    async fn open_account(&self, request: Request<pb::OpenAccountRequest>) -> Result<Response<pb::Account>, Status> {
        bureau_call!(self, request, "open_account", OpenAccount, Account)
    }

    async fn get_account(&self, request: Request<pb::GetAccountRequest>) -> Result<Response<pb::Account>, Status> {
        self.authorize(&request)?;
        let person = request.into_inner().person_id().map_err(convert_error)?;
        match self.ctx.store.account(&person) {
            Ok(Some(account)) => Ok(Response::new(account.into())),
            Ok(None) => Err(Status::not_found(format!(
                "{person} is not enrolled on this node (unknown_person)"
            ))),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    async fn credit(&self, request: Request<pb::CreditRequest>) -> Result<Response<pb::CreditReply>, Status> {
        bureau_call!(self, request, "credit", Credit, Credited)
    }

    async fn freeze(&self, request: Request<pb::FreezeRequest>) -> Result<Response<pb::Account>, Status> {
        bureau_call!(self, request, "freeze", Freeze, Account)
    }

    async fn unfreeze(&self, request: Request<pb::UnfreezeRequest>) -> Result<Response<pb::Account>, Status> {
        bureau_call!(self, request, "unfreeze", Unfreeze, Account)
    }

    async fn close_account(&self, request: Request<pb::CloseAccountRequest>) -> Result<Response<pb::Account>, Status> {
        bureau_call!(self, request, "close_account", CloseAccount, Account)
    }

    async fn bind(&self, request: Request<pb::BindRequest>) -> Result<Response<pb::BindReply>, Status> {
        bureau_call!(self, request, "bind", Bind, Bound)
    }

    async fn unbind(&self, request: Request<pb::UnbindRequest>) -> Result<Response<pb::UnbindReply>, Status> {
        bureau_call!(self, request, "unbind", Unbind, Unbound)
    }

    async fn list_bindings(
        &self,
        request: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsReply>, Status> {
        self.authorize(&request)?;
        let person = request.into_inner().person_id().map_err(convert_error)?;
        let store = &self.ctx.store;
        let load = || -> Result<_, exchange_store::StoreError> {
            let mut as_grantor = Vec::new();
            for id in store.bindings_of_grantor(&person)? {
                as_grantor.extend(store.binding(&id)?);
            }
            let mut as_grantee = Vec::new();
            for id in store.bindings_of_grantee(&person)? {
                as_grantee.extend(store.binding_copy(&id)?);
            }
            Ok((as_grantor, as_grantee))
        };
        let (as_grantor, as_grantee) = load().map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(pb::ListBindingsReply::from_bindings(
            as_grantor, as_grantee,
        )))
    }

    async fn settle(&self, request: Request<pb::SettleRequest>) -> Result<Response<pb::Receipt>, Status> {
        bureau_call!(self, request, "settle", Settle, Settled)
    }

    async fn refund(&self, request: Request<pb::RefundRequest>) -> Result<Response<pb::RefundReceipt>, Status> {
        bureau_call!(self, request, "refund", Refund, Refunded)
    }

    async fn set_order(&self, request: Request<pb::SetOrderRequest>) -> Result<Response<pb::SetOrderReply>, Status> {
        bureau_call!(self, request, "set_order", SetOrder, Ordered)
    }

    async fn set_limits(&self, request: Request<pb::SetLimitsRequest>) -> Result<Response<pb::SetLimitsReply>, Status> {
        bureau_call!(self, request, "set_limits", SetLimits, LimitsSet)
    }

    async fn cancel(&self, request: Request<pb::CancelRequest>) -> Result<Response<pb::RefundReceipt>, Status> {
        bureau_call!(self, request, "cancel", Cancel, Refunded)
    }

    async fn reverse(&self, request: Request<pb::ReverseRequest>) -> Result<Response<pb::RefundReceipt>, Status> {
        bureau_call!(self, request, "reverse", Reverse, Refunded)
    }

    async fn records(&self, request: Request<pb::RecordsRequest>) -> Result<Response<pb::RecordsPage>, Status> {
        self.authorize(&request)?;
        let ctx = self.ctx.clone();
        let request = request.into_inner();
        let page = tokio::task::spawn_blocking(move || crate::records::records(&ctx, request))
            .await
            .map_err(|error| Status::internal(format!("records: {error}")))??;
        Ok(Response::new(page))
    }

    async fn clearing(&self, request: Request<pb::ClearingRequest>) -> Result<Response<pb::ClearingReport>, Status> {
        self.authorize(&request)?;
        let ctx = self.ctx.clone();
        let request = request.into_inner();
        let report = tokio::task::spawn_blocking(move || crate::records::clearing(&ctx, request))
            .await
            .map_err(|error| Status::internal(format!("clearing: {error}")))??;
        Ok(Response::new(report))
    }

    async fn reconcile(&self, request: Request<pb::ReconcileRequest>) -> Result<Response<pb::ReconcileReport>, Status> {
        self.authorize(&request)?;
        let report = crate::records::reconcile(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(report))
    }
}

/// The national monitor's view of this node.
#[derive(Debug, Clone)]
pub struct MonitorService {
    pub ctx: Context,
}

impl MonitorService {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        match identity(&self.ctx, request)? {
            PeerIdentity::Monitor => Ok(()),
            PeerIdentity::Bureau(province) | PeerIdentity::Node(province) if province == self.ctx.province => Ok(()),
            other => Err(Status::permission_denied(format!(
                "{other} may not read this node's feed"
            ))),
        }
    }
}

/// A health sample of this node now.
pub fn health_sample(ctx: &Context) -> pb::HealthSample {
    let live = ctx.store.live_holds().unwrap_or_default();
    let held_fen = live
        .iter()
        .filter_map(|leg| match ctx.store.fence(leg) {
            Ok(Some(exchange_core::records::Fence::Prepared(hold))) => Some(hold.amount.fen()),
            _ => None,
        })
        .fold(0u64, u64::saturating_add);
    pb::HealthSample {
        wall_ms: ctx.clock.now().wall_ms,
        holds_in_flight: u32::try_from(live.len()).unwrap_or(u32::MAX),
        held_fen,
        settlements_in_flight: u32::try_from(ctx.pending.len()).unwrap_or(u32::MAX),
        peer_links: ctx.link_states(),
    }
}

type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::FeedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Monitor for MonitorService {
    type FeedStream = FeedStream;

    async fn feed(&self, request: Request<pb::FeedRequest>) -> Result<Response<FeedStream>, Status> {
        self.authorize(&request)?;
        let mut after = request.into_inner().after_seq;
        let ctx = self.ctx.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(exchange_proto::FEED_SUBSCRIBER_QUEUE_MAX);
        tokio::spawn(async move {
            let mut last_health = Instant::now().checked_sub(Duration::from_millis(FEED_HEALTH_EVERY_MS));
            loop {
                let page = match ctx.store.journal_from(after, FEED_PAGE_LEN_MAX) {
                    Ok(page) => page,
                    Err(error) => {
                        let _closed = sender.send(Err(Status::unavailable(error.to_string()))).await;
                        return;
                    }
                };
                let full = page.len() >= FEED_PAGE_LEN_MAX;
                for (seq, entry) in page {
                    after = seq;
                    if sender.send(Ok(pb::FeedEvent::journal(seq, entry))).await.is_err() {
                        return;
                    }
                }
                if last_health.is_none_or(|at| at.elapsed() >= Duration::from_millis(FEED_HEALTH_EVERY_MS)) {
                    last_health = Some(Instant::now());
                    if sender
                        .send(Ok(pb::FeedEvent::health(after, health_sample(&ctx))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if !full {
                    tokio::time::sleep(Duration::from_millis(FEED_POLL_MS)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        ))))
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        self.authorize(&request)?;
        let ctx = &self.ctx;
        let sample = health_sample(ctx);
        Ok(Response::new(pb::NodeStatus {
            province: ctx.province.code(),
            incarnation: ctx.store.incarnation().unwrap_or(0),
            holds_in_flight: sample.holds_in_flight,
            settlements_in_flight: sample.settlements_in_flight,
            peer_links: sample.peer_links,
            last_journal_seq: ctx.store.last_journal_seq().unwrap_or(0),
        }))
    }
}
