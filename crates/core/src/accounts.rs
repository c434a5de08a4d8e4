//! Local account operations of a province's bureau: open, credit (划入), freeze, close.

use crate::account::{Account, PERSON_NAME_LEN_MAX, Scheme};
use crate::effects::{Effects, ReplyTo};
use crate::error::{ClientError, HandlerError};
use crate::ids::CreditId;
use crate::ledger::{LedgerView, Write};
use crate::message::ClientReply;
use crate::money::Money;
use crate::person::PersonId;
use crate::records::{CreditRecord, JournalEntry, JournalKind};
use crate::region::Province;
use crate::time::Now;

/// Longest freeze reason stored, in bytes.
pub const FREEZE_REASON_LEN_MAX: usize = 200;

type Outcome<V> = Result<Effects, HandlerError<<V as LedgerView>::Error>>;

fn storage<E: std::fmt::Debug>(error: E) -> HandlerError<E> {
    HandlerError::Storage(error)
}

fn unknown(person: &PersonId) -> ClientError {
    ClientError::not_found("unknown_person", format!("{person} is not enrolled on this node"))
}

fn credit_entry(person: PersonId, amount: Money, now: Now, reference: Option<String>, province: Province) -> Write {
    Write::Journal(JournalEntry {
        kind: JournalKind::Credit,
        wall_ms: now.wall_ms,
        amount,
        account: Some(person),
        leg: None,
        binding: None,
        settlement: None,
        counterparty: Some(province),
        reference,
    })
}

/// Account operations of one node.
#[derive(Clone, Copy, Debug)]
pub struct Accounts {
    pub province: Province,
}

impl Accounts {
    /// Enrols a person, with an opening balance for employees (journaled as a credit).
    pub fn open<V: LedgerView>(
        &self,
        view: &V,
        reply_to: ReplyTo,
        person: PersonId,
        name: String,
        scheme: Scheme,
        balance: Money,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let refusal = if view.account(&person).map_err(storage)?.is_some() {
            Some(ClientError::exists(
                "account_exists",
                format!("{person} is already enrolled on this node"),
            ))
        } else if name.trim().is_empty() || name.len() > PERSON_NAME_LEN_MAX || name.chars().any(char::is_control) {
            Some(ClientError::invalid(
                "bad_name",
                format!("name must be 1 to {PERSON_NAME_LEN_MAX} printable bytes"),
            ))
        } else if scheme == Scheme::Resident && !balance.is_zero() {
            Some(ClientError::invalid(
                "resident_balance",
                "resident-scheme persons have no personal account balance",
            ))
        } else {
            None
        };
        if let Some(error) = refusal {
            effects.reply(reply_to, ClientReply::Error(error));
            return Ok(effects);
        }
        let mut account = Account::open(person, name, self.province, scheme, now.wall_ms);
        account.credit(balance)?;
        if !balance.is_zero() {
            effects.writes.push(credit_entry(
                person,
                balance,
                now,
                Some("opening balance".into()),
                self.province,
            ));
        }
        effects.writes.push(Write::Account(account.clone()));
        effects.reply(reply_to, ClientReply::Account(account));
        Ok(effects)
    }

    /// A credit (划入) with a caller-chosen id: applied once, however often it is sent.
    pub fn credit<V: LedgerView>(
        &self,
        view: &V,
        reply_to: ReplyTo,
        credit: CreditId,
        person: PersonId,
        amount: Money,
        now: Now,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        if let Some(existing) = view.credit(&credit).map_err(storage)? {
            let reply = if existing.person == person && existing.amount == amount {
                let balance = view
                    .account(&person)
                    .map_err(storage)?
                    .map(|a| a.balance)
                    .unwrap_or(Money::ZERO);
                ClientReply::Credited {
                    person,
                    balance,
                    duplicate: true,
                }
            } else {
                ClientReply::Error(ClientError::exists(
                    "credit_id_reused",
                    format!("credit id {credit} was already used for another credit; nothing was changed"),
                ))
            };
            effects.reply(reply_to, reply);
            return Ok(effects);
        }
        let Some(mut account) = view.account(&person).map_err(storage)? else {
            effects.reply(reply_to, ClientReply::Error(unknown(&person)));
            return Ok(effects);
        };
        let refusal = if amount.is_zero() {
            Some(ClientError::invalid("zero_credit", "a credit must be above zero"))
        } else if !account.has_personal_account() {
            Some(ClientError::precondition(
                "no_personal_account",
                format!("{person} is resident-insured and has no personal account"),
            ))
        } else if account.closed {
            Some(ClientError::precondition(
                "account_closed",
                format!("{person}'s account is closed"),
            ))
        } else {
            None
        };
        if let Some(error) = refusal {
            effects.reply(reply_to, ClientReply::Error(error));
            return Ok(effects);
        }
        if account.credit(amount).is_err() {
            effects.reply(
                reply_to,
                ClientReply::Error(ClientError::invalid(
                    "balance_overflow",
                    "the credit would overflow the balance",
                )),
            );
            return Ok(effects);
        }
        effects.writes.push(credit_entry(
            person,
            amount,
            now,
            Some(credit.to_string()),
            self.province,
        ));
        effects.writes.push(Write::Credit(CreditRecord {
            credit,
            person,
            amount,
            applied_wall_ms: now.wall_ms,
        }));
        let balance = account.balance;
        effects.writes.push(Write::Account(account));
        effects.reply(
            reply_to,
            ClientReply::Credited {
                person,
                balance,
                duplicate: false,
            },
        );
        Ok(effects)
    }

    /// Freezes (card lost) or unfreezes an account. Effective at once: the next prepare on
    /// the account, here or from any province, reads this write.
    pub fn set_frozen<V: LedgerView>(
        &self,
        view: &V,
        reply_to: ReplyTo,
        person: PersonId,
        frozen: bool,
        reason: Option<String>,
    ) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(mut account) = view.account(&person).map_err(storage)? else {
            effects.reply(reply_to, ClientReply::Error(unknown(&person)));
            return Ok(effects);
        };
        if let Some(reason) = &reason {
            if reason.trim().is_empty() || reason.len() > FREEZE_REASON_LEN_MAX {
                effects.reply(
                    reply_to,
                    ClientReply::Error(ClientError::invalid(
                        "bad_reason",
                        format!("a freeze reason of 1 to {FREEZE_REASON_LEN_MAX} bytes is required"),
                    )),
                );
                return Ok(effects);
            }
        }
        account.frozen = frozen;
        account.frozen_reason = if frozen { reason } else { None };
        effects.writes.push(Write::Account(account.clone()));
        effects.reply(reply_to, ClientReply::Account(account));
        Ok(effects)
    }

    /// Closes an account (the person left the scheme): it neither pays nor is drawn on.
    pub fn close<V: LedgerView>(&self, view: &V, reply_to: ReplyTo, person: PersonId) -> Outcome<V> {
        let mut effects = Effects::default();
        let Some(mut account) = view.account(&person).map_err(storage)? else {
            effects.reply(reply_to, ClientReply::Error(unknown(&person)));
            return Ok(effects);
        };
        account.closed = true;
        effects.writes.push(Write::Account(account.clone()));
        effects.reply(reply_to, ClientReply::Account(account));
        Ok(effects)
    }
}
