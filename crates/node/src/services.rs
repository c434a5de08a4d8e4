//! The gRPC services of a node: `Exchange` (node to node), `Bureau` (the province's own
//! bureau and hospitals) and `Monitor` (the national monitor's feed). Each authorizes by the
//! identity in the client's certificate, converts, hands the request to the owning actor and
//! waits for the reply. Nothing is decided here.
//!
//! Every request is first admitted against its caller's budget (requests in flight and per
//! second, per certificate identity: `limits.rs`), before its body is decoded; a caller over
//! budget is refused with `RESOURCE_EXHAUSTED` and nothing of its request is applied.
//!
//! Every `Bureau` call is an operator action and goes to the audit log (`audit.rs`): an intent
//! before an action reaches the core and its outcome after, or one record after a read; a call
//! refused for its certificate's identity is recorded too.

use std::fmt::Debug;
use std::pin::Pin;
use std::time::{Duration, Instant};

use exchange_core::LedgerView;
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::node::Input;
use exchange_pki::PeerIdentity;
use exchange_proto::pb;
use exchange_proto::pb::bureau_server::Bureau;
use exchange_proto::pb::exchange_server::Exchange;
use exchange_proto::pb::monitor_server::Monitor;
use exchange_proto::{BureauReply, BureauRequest, bureau_reply_to_wire};
use exchange_store::{AUDIT_INTENT, AUDIT_PAGE_LEN_MAX, AuditAppended, AuditEntry};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::audit::{AUDIT_PAGE_LEN_DEFAULT, outcome_of, summary};
use crate::context::Context;
use crate::limits::{Admission, Admitted};

/// Journal entries sent per page of the monitor feed.
pub const FEED_PAGE_LEN_MAX: usize = 512;
/// How often an idle feed looks for new journal entries and sends a health sample.
pub const FEED_POLL_MS: u64 = 250;
/// Health samples are sent at most this often on a busy feed.
pub const FEED_HEALTH_EVERY_MS: u64 = 1_000;

/// Labels of the services in the request metrics of refused callers.
pub const EXCHANGE_SERVICE: &str = "exchange";
pub const BUREAU_SERVICE: &str = "bureau";
pub const MONITOR_SERVICE: &str = "monitor";

fn convert_error(error: exchange_proto::ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Node-to-node messages.
#[derive(Debug, Clone)]
pub struct ExchangeService {
    pub ctx: Context,
    pub admission: Admission,
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn deliver(&self, mut request: Request<pb::PeerBatch>) -> Result<Response<pb::DeliverReply>, Status> {
        let admitted = self.admission.take(&self.ctx, &mut request, EXCHANGE_SERVICE)?;
        let from = match admitted.caller.identity {
            PeerIdentity::Node(province) if province != self.ctx.province => province,
            other => {
                return Err(Status::permission_denied(format!(
                    "{other} may not send node-to-node messages"
                )));
            }
        };
        let messages = exchange_proto::peer_batch_from_wire(request.into_inner()).map_err(convert_error)?;
        let accepted = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        // What a peer may ask is checked by the core against `from` (the certificate's
        // province), e.g. a prepare must name `from` as the leg's coordinator.
        let inputs = messages
            .into_iter()
            .map(|message| Input::Peer { from, message })
            .collect();
        self.ctx
            .deliver_batch(inputs)
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(pb::DeliverReply { accepted }))
    }

    async fn journal(&self, mut request: Request<pb::JournalQuery>) -> Result<Response<pb::JournalPage>, Status> {
        let admitted = self.admission.take(&self.ctx, &mut request, EXCHANGE_SERVICE)?;
        // A node reads only its own province's side of the legs it shares with this one.
        let peer = match admitted.caller.identity {
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
        drop(admitted);
        Ok(Response::new(page))
    }
}

/// The province's own bureau and hospitals.
#[derive(Debug, Clone)]
pub struct BureauService {
    pub ctx: Context,
    pub admission: Admission,
}

impl BureauService {
    /// Lets only this province's bureau in, within its budget; returns the admitted request
    /// (how the audit log names the caller, and the place in flight the call holds until it is
    /// answered). A caller whose certificate verifies but who may not operate this node is
    /// audited too; a caller over its budget is refused before that (see `limits.rs`).
    fn authorize<T: Debug>(&self, request: &mut Request<T>, action: &'static str) -> Result<Admitted, Status> {
        let admitted = self.admission.take(&self.ctx, request, BUREAU_SERVICE)?;
        let caller = &admitted.caller;
        match caller.identity {
            PeerIdentity::Bureau(province) if province == self.ctx.province => Ok(admitted),
            other => {
                let refused = Status::permission_denied(format!(
                    "{other} may not operate the node of province {}",
                    self.ctx.province
                ));
                let outcome = outcome_of::<()>(&Err(refused.clone()));
                // Refused either way; a failure to record it is logged by `audit`.
                let _ = self.audit(&caller.actor, action, summary(request.get_ref()), outcome, None);
                Err(refused)
            }
        }
    }

    /// Appends one audit record (not waiting for it to be durable: see `audit.rs`).
    fn audit(
        &self,
        actor: &str,
        action: &'static str,
        detail: String,
        outcome: String,
        intent_seq: Option<u64>,
    ) -> Result<AuditAppended, Status> {
        let entry = AuditEntry {
            wall_ms: self.ctx.clock.now().wall_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            detail,
            outcome,
            intent_seq,
        };
        self.ctx.store.append_audit(&entry).map_err(|error| {
            tracing::warn!(action, %error, "could not append to the audit log");
            Status::unavailable(format!("audit log: {error}"))
        })
    }

    /// Records a read after its result. A read that cannot be recorded is not answered.
    fn audited_read<R>(
        &self,
        actor: &str,
        action: &'static str,
        detail: String,
        result: Result<R, Status>,
    ) -> Result<Response<R>, Status> {
        self.audit(actor, action, detail, outcome_of(&result), None)?;
        result.map(Response::new)
    }

    /// A read that scans the journal: authorized, run off the async workers (a scan may be
    /// long), and audited.
    async fn journal_read<Q, R>(
        &self,
        mut request: Request<Q>,
        action: &'static str,
        read: fn(&Context, Q) -> Result<R, Status>,
    ) -> Result<Response<R>, Status>
    where
        Q: Debug + Send + 'static,
        R: Send + 'static,
    {
        let admitted = self.authorize(&mut request, action)?;
        let ctx = self.ctx.clone();
        let request = request.into_inner();
        let detail = summary(&request);
        let result = tokio::task::spawn_blocking(move || read(&ctx, request))
            .await
            .map_err(|error| Status::internal(format!("{action}: {error}")))
            .and_then(|answer| answer);
        self.audited_read(&admitted.caller.actor, action, detail, result)
    }

    /// Runs an action through the core between its audit intent and its audit outcome. The
    /// intent is written before the core sees the request, so the durable wait of whatever the
    /// action writes or answers covers it; an action that cannot be recorded is not run. The
    /// outcome rides on the next flush (see `audit.rs`) and a failure to record it does not
    /// change the answer, whose effects are already durable.
    async fn audited_action<R: Debug>(
        &self,
        actor: &str,
        action: &'static str,
        request: BureauRequest,
        reply_of: impl FnOnce(BureauReply) -> Option<R>,
    ) -> Result<Response<R>, Status> {
        let intent = self.audit(actor, action, summary(&request), AUDIT_INTENT.to_string(), None)?;
        let result = match self.call(action, request).await {
            Ok(reply) => reply_of(reply).ok_or_else(|| wrong_reply(action)),
            Err(status) => Err(status),
        };
        let detail = match &result {
            Ok(reply) => summary(reply),
            Err(status) => status.message().to_string(),
        };
        let _ = self.audit(actor, action, detail, outcome_of(&result), Some(intent.seq));
        result.map(Response::new)
    }

    fn account_of(&self, person: &exchange_core::PersonId) -> Result<pb::Account, Status> {
        match self.ctx.store.account(person) {
            Ok(Some(account)) => Ok(account.into()),
            Ok(None) => Err(Status::not_found(format!(
                "{person} is not enrolled on this node (unknown_person)"
            ))),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    fn list_bindings_of(&self, person: &exchange_core::PersonId) -> Result<pb::ListBindingsReply, Status> {
        let store = &self.ctx.store;
        let load = || -> Result<_, exchange_store::StoreError> {
            let mut as_grantor = Vec::new();
            for id in store.bindings_of_grantor(person)? {
                as_grantor.extend(store.binding(&id)?);
            }
            let mut as_grantee = Vec::new();
            for id in store.bindings_of_grantee(person)? {
                as_grantee.extend(store.binding_copy(&id)?);
            }
            Ok((as_grantor, as_grantee))
        };
        let (as_grantor, as_grantee) = load().map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(pb::ListBindingsReply::from_bindings(as_grantor, as_grantee))
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
                return Err(Status::unavailable(match ctx.failure() {
                    Some(failure) => format!("the node stopped acknowledging: {failure}"),
                    None => "the node dropped the request".to_string(),
                }));
            }
            Err(_) => {
                ctx.pending.forget(reply_to);
                ctx.metrics.client_request(method, "deadline_exceeded");
                return Err(Status::deadline_exceeded(
                    "no answer in time; the request may still complete — retry with the same id",
                ));
            }
        };
        if is_settlement && let ClientReply::Settled(receipt) = &reply {
            ctx.metrics
                .observe_settlement(ctx.province, receipt, started.elapsed().as_secs_f64());
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
        let mut request = $request;
        let admitted = $self.authorize(&mut request, $method)?;
        $self
            .audited_action(
                &admitted.caller.actor,
                $method,
                BureauRequest::$variant(request.into_inner()),
                |reply| match reply {
                    BureauReply::$reply(reply) => Some(reply),
                    _ => None,
                },
            )
            .await
    }};
}

#[tonic::async_trait]
impl Bureau for BureauService {
    async fn open_account(&self, request: Request<pb::OpenAccountRequest>) -> Result<Response<pb::Account>, Status> {
        bureau_call!(self, request, "open_account", OpenAccount, Account)
    }

    async fn get_account(&self, mut request: Request<pb::GetAccountRequest>) -> Result<Response<pb::Account>, Status> {
        let admitted = self.authorize(&mut request, "get_account")?;
        let actor = &admitted.caller.actor;
        let request = request.into_inner();
        let detail = summary(&request);
        let result = request
            .person_id()
            .map_err(convert_error)
            .and_then(|person| self.account_of(&person));
        self.audited_read(actor, "get_account", detail, result)
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
        mut request: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsReply>, Status> {
        let admitted = self.authorize(&mut request, "list_bindings")?;
        let actor = &admitted.caller.actor;
        let request = request.into_inner();
        let detail = summary(&request);
        let result = request
            .person_id()
            .map_err(convert_error)
            .and_then(|person| self.list_bindings_of(&person));
        self.audited_read(actor, "list_bindings", detail, result)
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

    async fn transfer(&self, request: Request<pb::TransferRequest>) -> Result<Response<pb::TransferReceipt>, Status> {
        bureau_call!(self, request, "transfer", Transfer, Transferred)
    }

    async fn records(&self, request: Request<pb::RecordsRequest>) -> Result<Response<pb::RecordsPage>, Status> {
        self.journal_read(request, "records", crate::records::records).await
    }

    async fn clearing(&self, request: Request<pb::ClearingRequest>) -> Result<Response<pb::ClearingReport>, Status> {
        self.journal_read(request, "clearing", crate::records::clearing).await
    }

    async fn reconcile(
        &self,
        mut request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileReport>, Status> {
        let admitted = self.authorize(&mut request, "reconcile")?;
        let actor = &admitted.caller.actor;
        let request = request.into_inner();
        let detail = summary(&request);
        let result = crate::records::reconcile(&self.ctx, request).await;
        self.audited_read(actor, "reconcile", detail, result)
    }

    async fn audit_log(&self, mut request: Request<pb::AuditRequest>) -> Result<Response<pb::AuditPage>, Status> {
        let admitted = self.authorize(&mut request, "audit_log")?;
        let actor = &admitted.caller.actor;
        let request = request.into_inner();
        let detail = summary(&request);
        let limit = match usize::try_from(request.limit).unwrap_or(usize::MAX) {
            0 => AUDIT_PAGE_LEN_DEFAULT,
            limit => limit.min(AUDIT_PAGE_LEN_MAX),
        };
        let store = self.ctx.store.clone();
        let result = tokio::task::spawn_blocking(move || store.audit_from(request.after_seq, limit))
            .await
            .map_err(|error| Status::internal(format!("audit log: {error}")))
            .and_then(|page| page.map_err(|error| Status::unavailable(format!("audit log: {error}"))))
            .map(|records| {
                let full = records.len() >= limit;
                let next_after_seq = match records.last() {
                    Some(last) if full => last.seq,
                    _ => 0,
                };
                pb::AuditPage {
                    records: records.into_iter().map(crate::audit::record_to_wire).collect(),
                    next_after_seq,
                }
            });
        self.audited_read(actor, "audit_log", detail, result)
    }

    async fn verify_audit(
        &self,
        mut request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::AuditVerification>, Status> {
        let admitted = self.authorize(&mut request, "verify_audit")?;
        let actor = &admitted.caller.actor;
        let store = self.ctx.store.clone();
        // Flushed before answering: a head reported to an operator (who may write it down to
        // compare later) must survive a crash right after the answer. A store that has already
        // failed cannot flush; it verifies only what is stored (see `Store::verify_audit`),
        // which is when operators need the answer most.
        let result = tokio::task::spawn_blocking(move || {
            let verification = store.verify_audit()?;
            if !store.has_failed() {
                store.flush_blocking()?;
            }
            Ok::<_, exchange_store::StoreError>(verification)
        })
        .await
        .map_err(|error| Status::internal(format!("audit verification: {error}")))
        .and_then(|verification| {
            verification
                .map(crate::audit::verification_to_wire)
                .map_err(|error| Status::unavailable(format!("audit log: {error}")))
        });
        // What the walk found goes into the log too: the heads operators saw, or the break.
        let detail = result
            .as_ref()
            .map(crate::audit::verification_detail)
            .unwrap_or_default();
        self.audited_read(actor, "verify_audit", detail, result)
    }
}

/// The national monitor's view of this node.
#[derive(Debug, Clone)]
pub struct MonitorService {
    pub ctx: Context,
    pub admission: Admission,
}

impl MonitorService {
    /// Lets the monitor and this province's own bureau and node in, within their budget. A
    /// feed holds its place in flight only while it is set up, not while it streams.
    fn authorize<T>(&self, request: &mut Request<T>) -> Result<Admitted, Status> {
        let admitted = self.admission.take(&self.ctx, request, MONITOR_SERVICE)?;
        match admitted.caller.identity {
            PeerIdentity::Monitor => Ok(admitted),
            PeerIdentity::Bureau(province) | PeerIdentity::Node(province) if province == self.ctx.province => {
                Ok(admitted)
            }
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
        oldest_hold_age_ms: ctx.oldest_hold_age_ms(&live),
    }
}

type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::FeedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Monitor for MonitorService {
    type FeedStream = FeedStream;

    async fn feed(&self, mut request: Request<pb::FeedRequest>) -> Result<Response<FeedStream>, Status> {
        let _admitted = self.authorize(&mut request)?;
        let mut after = request.into_inner().after_seq;
        let ctx = self.ctx.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(exchange_proto::FEED_SUBSCRIBER_QUEUE_MAX);
        tokio::spawn(async move {
            let mut last_health = Instant::now().checked_sub(Duration::from_millis(FEED_HEALTH_EVERY_MS));
            loop {
                // Only entries on disk: one a crash or a failed flush takes back must not reach
                // the monitor (its sequence number would be reused after the restart).
                let page = match ctx.store.durable_journal_from(after, FEED_PAGE_LEN_MAX) {
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

    async fn status(&self, mut request: Request<pb::StatusRequest>) -> Result<Response<pb::NodeStatus>, Status> {
        let _admitted = self.authorize(&mut request)?;
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
