//! Per-identity admission: how many requests one caller may have in flight, and how fast it may
//! send them (a token bucket), so one misbehaving bureau tool, peer node or monitor cannot take
//! the node from everyone else. The node-wide cap on client requests in flight
//! (`BureauService::call`) and the per-connection limits of the gRPC server stay in front.
//!
//! A caller is its verified certificate: a peer node by its province (`node.<code>.exchange`,
//! whatever certificate it presents), a bureau tool or the monitor by identity and serial
//! (`bureau.<code>.exchange serial=<hex>`), so two certificates of one bureau have a budget
//! each. Admission runs in a gRPC interceptor, before the request's body is decoded, so a
//! refused request costs neither decoding nor memory; the permit travels in the request's
//! extensions and the handler holds it until it answers (a feed holds it while it sets up).
//! A refused request is answered `RESOURCE_EXHAUSTED` with the stable reason (`rate_limited`,
//! `too_many_in_flight`) in `x-exchange-reason`, the wait in `x-exchange-retry-after-ms`, and a
//! message `<who> exceeded <limit>: retry after <wait>`. It never reaches the core, so nothing
//! of it is applied; nor is it audited (an audit record per refused call would let a flood
//! fill the audit log): the refusals are counted in `exchange_client_requests_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange_core::{ClientError, ErrorKind};
use exchange_pki::PeerIdentity;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::audit::{Caller, caller_of};
use crate::config::Tuning;
use crate::context::Context;

/// Metadata key of how long a refused caller should wait before retrying, milliseconds.
pub const RETRY_AFTER_METADATA_KEY: &str = "x-exchange-retry-after-ms";
/// Reason code of a caller over its request rate.
pub const RATE_LIMITED_REASON: &str = "rate_limited";
/// Reason code of a caller over its requests in flight.
pub const TOO_MANY_IN_FLIGHT_REASON: &str = "too_many_in_flight";
/// Callers tracked at once per kind. Identities are certificates of the exchange's own CA, so
/// a node meets a few dozen; idle ones are forgotten when the table fills.
pub const IDENTITIES_TRACKED_MAX: usize = 4_096;
/// What a caller over its in-flight budget is told to wait.
pub const IN_FLIGHT_RETRY_AFTER_MS: u64 = 50;

/// Thousandths of a token: the bucket's unit, so slow rates refill smoothly.
const MILLI: u64 = 1_000;

/// One kind of caller's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Requests one caller may have in flight at once.
    pub in_flight_max: usize,
    /// Requests per second one caller may sustain (the bucket's refill rate).
    pub per_s: u64,
    /// Requests one caller may send at once after a quiet spell (the bucket's size).
    pub burst: u64,
}

#[derive(Debug)]
struct Entry {
    in_flight: usize,
    /// Thousandths of a request the caller may still send now.
    tokens_milli: u64,
    refilled: Instant,
}

/// The budgets of every caller of one kind (clients, or peer nodes).
#[derive(Debug)]
pub struct IdentityLimits {
    budget: Budget,
    callers: Mutex<HashMap<String, Entry>>,
}

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    InFlight {
        max: usize,
    },
    Rate {
        per_s: u64,
        burst: u64,
        retry_after: Duration,
    },
    TooManyCallers,
}

impl IdentityLimits {
    pub fn new(budget: Budget) -> IdentityLimits {
        IdentityLimits {
            budget,
            callers: Mutex::new(HashMap::new()),
        }
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Admits one request of `who` at `now`, or says why not. A refused request takes neither
    /// a token nor a place in flight.
    pub fn admit(self: &Arc<Self>, who: &str, now: Instant) -> Result<Permit, Refusal> {
        let budget = self.budget;
        let capacity = budget.burst.saturating_mul(MILLI);
        let mut callers = self.callers.lock().map_err(|_| Refusal::TooManyCallers)?;
        if !callers.contains_key(who) && callers.len() >= IDENTITIES_TRACKED_MAX {
            // Forget the callers with nothing in flight and a full bucket: they would start
            // from the same state anyway.
            callers.retain(|_, entry| entry.in_flight > 0 || refill(entry, budget, now) < capacity);
            if callers.len() >= IDENTITIES_TRACKED_MAX {
                return Err(Refusal::TooManyCallers);
            }
        }
        let entry = callers.entry(who.to_string()).or_insert_with(|| Entry {
            in_flight: 0,
            tokens_milli: capacity,
            refilled: now,
        });
        if entry.in_flight >= budget.in_flight_max {
            return Err(Refusal::InFlight {
                max: budget.in_flight_max,
            });
        }
        let tokens = refill(entry, budget, now);
        entry.tokens_milli = tokens;
        entry.refilled = now;
        if tokens < MILLI {
            let missing = MILLI.saturating_sub(tokens);
            // missing / (per_s * MILLI) seconds, rounded up to the next millisecond.
            let retry_after_ms = missing
                .saturating_mul(1_000)
                .div_ceil(budget.per_s.saturating_mul(MILLI).max(1));
            return Err(Refusal::Rate {
                per_s: budget.per_s,
                burst: budget.burst,
                retry_after: Duration::from_millis(retry_after_ms.max(1)),
            });
        }
        entry.tokens_milli = tokens.saturating_sub(MILLI);
        entry.in_flight = entry.in_flight.saturating_add(1);
        Ok(Permit {
            limits: self.clone(),
            who: who.to_string(),
        })
    }

    /// Requests of `who` in flight now.
    pub fn in_flight(&self, who: &str) -> usize {
        self.callers
            .lock()
            .ok()
            .and_then(|callers| callers.get(who).map(|entry| entry.in_flight))
            .unwrap_or(0)
    }

    fn release(&self, who: &str) {
        if let Ok(mut callers) = self.callers.lock()
            && let Some(entry) = callers.get_mut(who)
        {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
    }
}

/// The tokens of `entry` at `now` (not stored).
fn refill(entry: &Entry, budget: Budget, now: Instant) -> u64 {
    let elapsed_us = u64::try_from(now.saturating_duration_since(entry.refilled).as_micros()).unwrap_or(u64::MAX);
    // per_s tokens a second is per_s * MILLI / 1e6 thousandths a microsecond.
    let added = u128::from(elapsed_us)
        .saturating_mul(u128::from(budget.per_s))
        .checked_div(1_000)
        .unwrap_or(0);
    let added = u64::try_from(added).unwrap_or(u64::MAX);
    entry
        .tokens_milli
        .saturating_add(added)
        .min(budget.burst.saturating_mul(MILLI))
}

/// One admitted request's place in flight, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<IdentityLimits>,
    who: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.release(&self.who);
    }
}

/// An admitted request: its verified caller and its permit. Travels in the request's
/// extensions from the interceptor to the handler (shared, so the extensions can be cloned;
/// the place in flight is given back when the last copy is dropped).
#[derive(Clone, Debug)]
pub struct Admitted {
    pub caller: Caller,
    _permit: Arc<Permit>,
}

/// The node's admission: one budget for peer nodes (by province), one for clients (bureau
/// tools and the monitor, by certificate).
#[derive(Clone, Debug)]
pub struct Admission {
    pub clients: Arc<IdentityLimits>,
    pub peers: Arc<IdentityLimits>,
}

impl Admission {
    pub fn new(tuning: &Tuning) -> Admission {
        Admission {
            clients: Arc::new(IdentityLimits::new(Budget {
                in_flight_max: tuning.client_in_flight_per_identity_max,
                per_s: tuning.client_requests_per_s_per_identity,
                burst: tuning.client_burst_per_identity,
            })),
            peers: Arc::new(IdentityLimits::new(Budget {
                in_flight_max: tuning.peer_in_flight_max,
                per_s: tuning.peer_requests_per_s,
                burst: tuning.peer_burst,
            })),
        }
    }

    /// Verifies the caller of `request` and admits it against its budget. `service` labels
    /// the refusal in the metrics.
    pub fn admit<T>(&self, ctx: &Context, request: &Request<T>, service: &str) -> Result<Admitted, Status> {
        let caller = caller_of(ctx, request)?;
        let (limits, who) = match caller.identity {
            // A node is its province, whichever of its certificates it presents.
            PeerIdentity::Node(_) => (&self.peers, caller.identity.to_string()),
            PeerIdentity::Bureau(_) | PeerIdentity::Monitor => (&self.clients, caller.actor.clone()),
        };
        match limits.admit(&who, Instant::now()) {
            Ok(permit) => Ok(Admitted {
                caller,
                _permit: Arc::new(permit),
            }),
            Err(refusal) => {
                ctx.metrics.client_request(service, "resource_exhausted");
                tracing::debug!(%who, service, ?refusal, "request refused by its caller's budget");
                Err(refusal_status(&who, refusal))
            }
        }
    }

    /// The admitted request that the interceptor let in, or admits it now (a service called
    /// without the interceptor, as in tests).
    pub fn take<T>(&self, ctx: &Context, request: &mut Request<T>, service: &str) -> Result<Admitted, Status> {
        match request.extensions_mut().remove::<Admitted>() {
            Some(admitted) => Ok(admitted),
            None => self.admit(ctx, request, service),
        }
    }

    /// A gRPC interceptor admitting each request before its body is decoded.
    pub fn interceptor(
        &self,
        ctx: Context,
        service: &'static str,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
        let admission = self.clone();
        move |mut request: Request<()>| {
            let admitted = admission.admit(&ctx, &request, service)?;
            request.extensions_mut().insert(admitted);
            Ok(request)
        }
    }
}

/// The status a refused caller gets: `RESOURCE_EXHAUSTED`, `<who> exceeded <limit>: retry
/// after <wait>`, with the reason and the wait in metadata.
pub fn refusal_status(who: &str, refusal: Refusal) -> Status {
    let (reason, message, retry_after_ms) = match refusal {
        Refusal::InFlight { max } => (
            TOO_MANY_IN_FLIGHT_REASON,
            format!(
                "{who} exceeded {max} requests in flight: retry after one of them is answered (about {IN_FLIGHT_RETRY_AFTER_MS} ms)"
            ),
            IN_FLIGHT_RETRY_AFTER_MS,
        ),
        Refusal::Rate {
            per_s,
            burst,
            retry_after,
        } => {
            let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
            (
                RATE_LIMITED_REASON,
                format!("{who} exceeded {per_s} requests/s (burst {burst}): retry after {ms} ms"),
                ms,
            )
        }
        Refusal::TooManyCallers => (
            TOO_MANY_IN_FLIGHT_REASON,
            format!("{who} exceeded the node's table of {IDENTITIES_TRACKED_MAX} callers: retry after 1000 ms"),
            1_000,
        ),
    };
    let mut status = exchange_proto::status::client_error_to_status(&ClientError::new(
        ErrorKind::ResourceExhausted,
        reason,
        message,
    ));
    status
        .metadata_mut()
        .insert(RETRY_AFTER_METADATA_KEY, MetadataValue::from(retry_after_ms));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(in_flight_max: usize, per_s: u64, burst: u64) -> Arc<IdentityLimits> {
        Arc::new(IdentityLimits::new(Budget {
            in_flight_max,
            per_s,
            burst,
        }))
    }

    #[test]
    fn in_flight_is_bounded_per_caller_and_given_back() {
        let limits = limits(2, 1_000, 1_000);
        let now = Instant::now();
        let a = limits.admit("a", now).unwrap();
        let _b = limits.admit("a", now).unwrap();
        assert_eq!(limits.admit("a", now).unwrap_err(), Refusal::InFlight { max: 2 });
        // Another caller has its own budget.
        let _other = limits.admit("b", now).unwrap();
        drop(a);
        assert_eq!(limits.in_flight("a"), 1);
        let _c = limits.admit("a", now).unwrap();
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let limits = limits(1_000, 10, 3);
        let start = Instant::now();
        for _ in 0..3 {
            drop(limits.admit("a", start).unwrap());
        }
        match limits.admit("a", start).unwrap_err() {
            Refusal::Rate { retry_after, .. } => assert_eq!(retry_after, Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        // 10/s: one more after 100 ms, not before.
        assert!(limits.admit("a", start + Duration::from_millis(50)).is_err());
        drop(limits.admit("a", start + Duration::from_millis(100)).unwrap());
        assert!(limits.admit("a", start + Duration::from_millis(100)).is_err());
        // Never more than the burst, however long the caller was quiet.
        let later = start + Duration::from_secs(3_600);
        for _ in 0..3 {
            drop(limits.admit("a", later).unwrap());
        }
        assert!(limits.admit("a", later).is_err());
    }

    #[test]
    fn extreme_budgets_do_not_overflow() {
        let limits = limits(usize::MAX, u64::MAX, u64::MAX);
        let now = Instant::now();
        for step in 0..10 {
            drop(limits.admit("a", now + Duration::from_secs(step * 1_000_000)).unwrap());
        }
        let limits = self::limits(1, 1, 1);
        drop(limits.admit("a", now).unwrap());
        match limits.admit("a", now).unwrap_err() {
            Refusal::Rate { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_table_of_callers_is_bounded() {
        let limits = limits(10, 1, 1);
        let now = Instant::now();
        let held: Vec<Permit> = (0..IDENTITIES_TRACKED_MAX)
            .map(|n| limits.admit(&format!("c{n}"), now).unwrap())
            .collect();
        assert_eq!(limits.admit("new", now).unwrap_err(), Refusal::TooManyCallers);
        drop(held);
        // Idle callers with a full bucket are forgotten to make room.
        let later = now + Duration::from_secs(2);
        drop(limits.admit("new", later).unwrap());
    }

    #[test]
    fn a_refusal_names_who_what_and_when() {
        let status = refusal_status(
            "bureau.500000.exchange serial=01",
            Refusal::Rate {
                per_s: 5,
                burst: 5,
                retry_after: Duration::from_millis(200),
            },
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status
                .message()
                .starts_with("bureau.500000.exchange serial=01 exceeded 5 requests/s (burst 5): retry after 200 ms"),
            "{}",
            status.message()
        );
        assert_eq!(status.metadata().get(RETRY_AFTER_METADATA_KEY).unwrap(), "200");
        let error = exchange_proto::status::status_to_client_error(&status).unwrap();
        assert_eq!(error.reason, RATE_LIMITED_REASON);
    }
}
