//! Sans-IO core of the cross-province family mutual-aid exchange: the domain and the protocol.
//!
//! Nothing here reads a clock, opens a socket or touches a disk. Time comes in with each event
//! (`time::Now`), storage is read through `ledger::LedgerView` and changed only by the write
//! sets this crate returns, and messages leave as commands. The simulator, the model checker
//! and the real node all drive this one piece of logic.

// Money and protocol code: every arithmetic operation is checked, no index can panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]
// Handlers take the view, the sender, the message's fields and `now`; bundling them would
// only hide what each one reads.
#![allow(clippy::too_many_arguments)]

pub mod account;
pub mod binding;
pub mod ids;
pub mod money;
pub mod person;
pub mod plan;
pub mod policy;
pub mod reason;
pub mod region;
pub mod time;

pub use account::{Account, Scheme};
pub use binding::{Binding, BindingKind, BindingStatus, Evidence, Limits, Relation};
pub use ids::{BindingId, CreditId, LegId, LegScope, RefundId, SettlementId, TransferId};
pub use money::Money;
pub use person::PersonId;
pub use policy::{GrantorOrder, Policy};
pub use reason::Refusal;
pub use region::{Province, Region};
pub use time::Now;

pub mod accounts;
pub mod bindings;
pub mod clearing;
pub mod config;
pub mod coordinator;
pub mod effects;
pub mod error;
pub mod ledger;
pub mod mem;
pub mod message;
pub mod node;
pub mod outbox;
pub mod overlay;
pub mod participant;
pub mod records;
pub mod transfer;

pub use config::ProtocolConfig;
pub use effects::{Effects, Note, ReplyTo, Timer, TimerKind};
pub use error::{ClientError, ErrorKind, HandlerError};
pub use ledger::{LedgerView, Write};
pub use message::{ClientReply, ClientRequest, PeerMessage};
pub use node::{Input, NodeCore};
