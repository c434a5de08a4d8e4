//! A bureau client of a node (for `exchange ctl`, the demo, benchmarks and tests): speaks the
//! Bureau gRPC API with the province's bureau certificate and returns core values.

use std::path::Path;
use std::time::Duration;

use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::{Account, Binding, PersonId, Province};
use exchange_pki::{client_tls_config, load_ca, load_identity};
use exchange_proto::pb;
use exchange_proto::pb::bureau_client::BureauClient;
use exchange_proto::{BureauReply, BureauRequest};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::config::NodeConfig;
use crate::error::NodeError;

/// A connection to one node's Bureau service.
#[derive(Debug, Clone)]
pub struct BureauConn {
    client: BureauClient<Channel>,
    pub province: Province,
}

fn invalid_reply(error: exchange_proto::ConvertError) -> Status {
    Status::internal(format!("the node sent an invalid reply: {error}"))
}

impl BureauConn {
    /// Connects to the node of `config` with the bureau certificate that config names.
    pub async fn connect(config: &NodeConfig) -> Result<BureauConn, NodeError> {
        let paths = config.tls_paths();
        BureauConn::connect_to(
            &config.listen.to_string(),
            config.province,
            &paths.bureau_cert,
            &paths.bureau_key,
            &paths.ca,
        )
        .await
    }

    /// Connects to `address`, expecting the node of `province`.
    pub async fn connect_to(
        address: &str,
        province: Province,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<BureauConn, NodeError> {
        exchange_pki::install_crypto_provider();
        let tls = client_tls_config(load_identity(cert, key)?, load_ca(ca)?, province);
        let channel = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|error| NodeError::Actor(format!("bad address {address}: {error}")))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_lazy();
        let client = BureauClient::new(channel)
            .max_decoding_message_size(exchange_proto::MESSAGE_SIZE_MAX_BYTES)
            .max_encoding_message_size(exchange_proto::MESSAGE_SIZE_MAX_BYTES);
        Ok(BureauConn { client, province })
    }

    /// Sends a request through the node's core. A refusal comes back as `ClientReply::Error`;
    /// `Err` means the call itself failed (unreachable, deadline, permission).
    pub async fn call(&mut self, request: ClientRequest) -> Result<ClientReply, Status> {
        let client = &mut self.client;
        let result = match BureauRequest::from(request) {
            BureauRequest::OpenAccount(r) => client
                .open_account(r)
                .await
                .map(|r| BureauReply::Account(r.into_inner())),
            BureauRequest::Credit(r) => client.credit(r).await.map(|r| BureauReply::Credited(r.into_inner())),
            BureauRequest::Freeze(r) => client.freeze(r).await.map(|r| BureauReply::Account(r.into_inner())),
            BureauRequest::Unfreeze(r) => client.unfreeze(r).await.map(|r| BureauReply::Account(r.into_inner())),
            BureauRequest::CloseAccount(r) => client
                .close_account(r)
                .await
                .map(|r| BureauReply::Account(r.into_inner())),
            BureauRequest::Bind(r) => client.bind(r).await.map(|r| BureauReply::Bound(r.into_inner())),
            BureauRequest::Unbind(r) => client.unbind(r).await.map(|r| BureauReply::Unbound(r.into_inner())),
            BureauRequest::Settle(r) => client.settle(r).await.map(|r| BureauReply::Settled(r.into_inner())),
            BureauRequest::Refund(r) => client.refund(r).await.map(|r| BureauReply::Refunded(r.into_inner())),
            BureauRequest::SetOrder(r) => client.set_order(r).await.map(|r| BureauReply::Ordered(r.into_inner())),
            BureauRequest::SetLimits(r) => client
                .set_limits(r)
                .await
                .map(|r| BureauReply::LimitsSet(r.into_inner())),
            BureauRequest::Cancel(r) => client.cancel(r).await.map(|r| BureauReply::Refunded(r.into_inner())),
            BureauRequest::Reverse(r) => client.reverse(r).await.map(|r| BureauReply::Refunded(r.into_inner())),
            BureauRequest::Transfer(r) => client
                .transfer(r)
                .await
                .map(|r| BureauReply::Transferred(r.into_inner())),
        };
        match result {
            Ok(reply) => ClientReply::try_from(reply).map_err(invalid_reply),
            Err(status) => match (status.code(), exchange_proto::status::status_to_client_error(&status)) {
                // Transport-level failures stay errors; business refusals become replies.
                (
                    Code::Unavailable | Code::DeadlineExceeded | Code::Unauthenticated | Code::Unknown | Code::Internal,
                    _,
                ) => Err(status),
                (_, Some(error)) => Ok(ClientReply::Error(error)),
                (_, None) => Err(status),
            },
        }
    }

    /// A wallet transfer from `grantor` (of this node's province) to the grantee of `binding`:
    /// `ClientReply::Transferred` with a committed or refused receipt, or `ClientReply::Error`
    /// for a request that names no transfer (unknown binding, id reused...).
    pub async fn transfer(
        &mut self,
        transfer: exchange_core::TransferId,
        grantor: PersonId,
        binding: exchange_core::BindingId,
        amount: exchange_core::Money,
    ) -> Result<ClientReply, Status> {
        self.call(ClientRequest::Transfer {
            transfer,
            grantor,
            binding,
            amount,
        })
        .await
    }

    /// An account, or `None` if the person is not enrolled on this node.
    pub async fn account(&mut self, person: &PersonId) -> Result<Option<Account>, Status> {
        let request = pb::GetAccountRequest {
            person: person.to_string(),
        };
        match self.client.get_account(request).await {
            Ok(reply) => Account::try_from(reply.into_inner()).map(Some).map_err(invalid_reply),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// A person's bindings as grantor (authoritative here) and as grantee (copies here).
    pub async fn bindings(&mut self, person: &PersonId) -> Result<(Vec<Binding>, Vec<Binding>), Status> {
        let request = pb::ListBindingsRequest {
            person: person.to_string(),
        };
        let reply = self.client.list_bindings(request).await?.into_inner();
        reply.into_bindings().map_err(invalid_reply)
    }

    /// A page of a person's history, newest first (`before_seq` 0: from the newest).
    pub async fn records(&mut self, person: &PersonId, before_seq: u64, limit: u32) -> Result<pb::RecordsPage, Status> {
        let request = pb::RecordsRequest {
            person: person.to_string(),
            before_seq,
            limit,
        };
        Ok(self.client.records(request).await?.into_inner())
    }

    /// This province's net positions against every peer for `[from_ms, to_ms)`.
    pub async fn clearing(&mut self, from_ms: i64, to_ms: i64) -> Result<pb::ClearingReport, Status> {
        Ok(self
            .client
            .clearing(pb::ClearingRequest { from_ms, to_ms })
            .await?
            .into_inner())
    }

    /// Leg-by-leg reconciliation with `peer` for `[from_ms, to_ms)`.
    pub async fn reconcile(&mut self, peer: Province, from_ms: i64, to_ms: i64) -> Result<pb::ReconcileReport, Status> {
        let request = pb::ReconcileRequest {
            peer: peer.code(),
            from_ms,
            to_ms,
        };
        Ok(self.client.reconcile(request).await?.into_inner())
    }

    /// A page of the node's audit log: records after `after_seq`, in order (`limit` 0: the
    /// node's default page).
    pub async fn audit_log(&mut self, after_seq: u64, limit: u32) -> Result<pb::AuditPage, Status> {
        Ok(self
            .client
            .audit_log(pb::AuditRequest { after_seq, limit })
            .await?
            .into_inner())
    }

    /// Has the node walk its whole audit log's hash chain.
    pub async fn verify_audit(&mut self) -> Result<pb::AuditVerification, Status> {
        Ok(self.client.verify_audit(pb::VerifyAuditRequest {}).await?.into_inner())
    }

    /// Waits until the node answers (any answer from the bureau API counts), up to `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + timeout;
        let probe = PersonId::synthetic(self.province.code(), 0);
        loop {
            match self.account(&probe).await {
                Ok(_) => return Ok(()),
                Err(status) if tokio::time::Instant::now() >= deadline => return Err(status),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}
