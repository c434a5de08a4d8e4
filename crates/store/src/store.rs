//! `Store`: the sled database of one node, its trees, atomic apply, reads and recovery scans.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use exchange_core::account::Account;
use exchange_core::binding::Binding;
use exchange_core::ids::{BindingId, CreditId, LegId, RefundId, SettlementId, TransferId};
use exchange_core::ledger::{LedgerView, Write};
use exchange_core::person::{PERSON_ID_LEN, PersonId};
use exchange_core::records::{
    CreditRecord, Fence, JournalEntry, OutboxKey, RefundRecord, SettlementRecord, TransferRecord, WalletUsage,
};

use crate::account_value::{self, ACCOUNT_JOURNAL_TAIL_MAX};
use crate::audit::{
    AUDIT_PAGE_BYTES_MAX, AUDIT_PAGE_RECORDS_MAX, AUDIT_TREE, AuditEntry, AuditRecord, AuditVerification,
    decode_audit_page, load_head, verify_tree,
};
use crate::codec::{account_journal_key, decode, decode_u64, encode_key, encode_value, journal_key};
use crate::durability::{Durability, SledFiles, StoreStats, flush_durably};
use crate::error::StoreError;
use crate::journal_pages;
use crate::redo::{self, REDO_KEY, RedoOp};
use crate::{
    AUDIT_PAGE_LEN_MAX, CACHE_CAPACITY_BYTES_DEFAULT, JOURNAL_PAGE_LEN_MAX, META_NAME_BYTES_MAX, OPEN_LOCK_RETRY_MS,
    OPEN_LOCK_WAIT_MS_MAX, REDO_RECORD_BYTES_MAX, WRITE_SET_LEN_MAX,
};

/// How to open the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// sled's page cache. Bounded so memory does not grow with the number of accounts.
    pub cache_capacity_bytes: u64,
    /// sled's own periodic flush. `None` (the default): we flush explicitly, grouped, and a
    /// timer flush would only add fsyncs nobody waits for.
    pub flush_every_ms: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
            flush_every_ms: None,
        }
    }
}

/// Where an audit record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditAppended {
    pub seq: u64,
    /// For [`Store::durable`].
    pub ticket: u64,
}

/// What one apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Identifies this apply for [`Store::durable`]; strictly increasing in apply order.
    pub ticket: u64,
    /// The journal sequence numbers given to the set's `Write::Journal` entries, in order.
    pub journal_seqs: Vec<u64>,
}

/// The trees of the store, in a fixed order. A redo record names trees by this index, so the
/// order is part of the disk format: add new trees at the end (pinned by a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TreeName {
    Accounts,
    Bindings,
    BindingCopies,
    GrantorIndex,
    GranteeIndex,
    Fences,
    LiveHolds,
    Settlements,
    Refunds,
    Outbox,
    Credits,
    /// Wallet transfer decisions, by transfer id.
    Transfers,
    /// Each grantor's count of wallet transfers on their last counted day, by person id.
    WalletUsage,
    Journal,
    /// The journal by account, beyond the tail kept in each account's value (see
    /// `account_value.rs`): key = person id (18 bytes) + the first sequence number of a page
    /// (big-endian), value = the page's sequence numbers (empty in stores from before pages: the
    /// key's one); so a person's older history is one range scan, newest first.
    AccountJournal,
    Meta,
    /// The operator audit log (see `audit.rs`); written outside the write sets.
    Audit,
    /// The last write set, resolved, written before its changes (see `redo.rs`).
    Redo,
}

impl TreeName {
    const ALL: [TreeName; 18] = [
        TreeName::Accounts,
        TreeName::Bindings,
        TreeName::BindingCopies,
        TreeName::GrantorIndex,
        TreeName::GranteeIndex,
        TreeName::Fences,
        TreeName::LiveHolds,
        TreeName::Settlements,
        TreeName::Refunds,
        TreeName::Outbox,
        TreeName::Credits,
        TreeName::Transfers,
        TreeName::WalletUsage,
        TreeName::Journal,
        TreeName::AccountJournal,
        TreeName::Meta,
        TreeName::Audit,
        TreeName::Redo,
    ];

    fn name(self) -> &'static str {
        match self {
            TreeName::Accounts => "accounts",
            TreeName::Bindings => "bindings",
            TreeName::BindingCopies => "binding_copies",
            TreeName::GrantorIndex => "grantor_index",
            TreeName::GranteeIndex => "grantee_index",
            TreeName::Fences => "fences",
            TreeName::LiveHolds => "live_holds",
            TreeName::Settlements => "settlements",
            TreeName::Refunds => "refunds",
            TreeName::Outbox => "outbox",
            TreeName::Credits => "credits",
            TreeName::Transfers => "transfers",
            TreeName::WalletUsage => "wallet_usage",
            TreeName::Journal => "journal",
            TreeName::AccountJournal => "account_journal",
            TreeName::Meta => "meta",
            TreeName::Audit => AUDIT_TREE,
            TreeName::Redo => "redo",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Meta keys the store itself keeps; user counters live under another prefix, so no name a
/// caller picks can overwrite these.
const META_BINDING_SERIAL: &[u8] = b"sys/binding_serial";
const META_INCARNATION: &[u8] = b"sys/incarnation";
const META_COUNTER_PREFIX: &[u8] = b"counter/";

/// State only the writer touches, behind the writer lock.
#[derive(Debug)]
struct WriterState {
    /// The sequence number the next journal entry gets.
    next_journal_seq: u64,
    last_ticket: u64,
    /// The seq the next audit record gets, and the hash it links to.
    next_audit_seq: u64,
    audit_head_hash: [u8; 32],
    /// The highest binding serial written: a `Write::BindingSerial` at or below it is dropped,
    /// so the stored serial only grows whatever order concurrent binds apply in.
    binding_serial_written: u64,
    /// Audit records appended (chained, ticketed) but not yet in sled: written as one page
    /// right before the next flush, before the next write when they hold an intent, or when
    /// the page is full (see `audit.rs`).
    audit_pending: Vec<AuditRecord>,
    /// `audit_pending` holds an intent: it must reach sled's log before anything else does.
    audit_intent_pending: bool,
}

/// Everything the flusher thread shares with the handles.
#[derive(Debug)]
struct Shared {
    db: sled::Db,
    /// sled's log and blob files, synced by every flush (see `durability.rs`).
    files: SledFiles,
    /// Indexed by `TreeName::index`.
    trees: Vec<sled::Tree>,
    /// Single writer: applies are serialised so journal order equals apply order, tickets
    /// are handed out in the order writes land, fence compare-and-sets read what no one else
    /// can change meanwhile, and sled sees a set's redo record before its changes (the
    /// atomicity argument of `redo.rs` rests on that order).
    writer: Mutex<WriterState>,
    durability: Durability,
    /// The binding serial handed to the next reader (see `LedgerView::binding_serial` below).
    binding_serial_reserved: AtomicU64,
}

/// Stops and joins the flusher when the last `Store` handle goes away.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.durability.shut_down();
        if let Some(flusher) = self.flusher.take() {
            // Joined so the database (and its file lock) is released when the store is
            // dropped; the thread never panics, and if it did there is nothing left to do.
            let _ = flusher.join();
        }
        // A clean close keeps the audit records appended since the last flush (they are held
        // in memory until then); after a failure there is nothing more to write.
        let shared = &*self.shared;
        let _ = shared
            .durability
            .flush_once(&shared.db, &shared.files, &|| settle_audit(shared));
    }
}

/// The durable store of one node. Cheap to clone; all clones share one database and flusher.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

/// One encoded change, prepared before the writer lock is taken.
#[derive(Debug)]
enum Op {
    Put {
        tree: TreeName,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Remove {
        tree: TreeName,
        key: Vec<u8>,
    },
    Journal {
        value: Vec<u8>,
        /// The account the entry concerns, for the per-account index: its id, and its key in
        /// the accounts tree (only accounts of this node are indexed).
        account: Option<([u8; PERSON_ID_LEN], Vec<u8>)>,
    },
    /// Adds ids to a binding index (`exchange_core::ledger::index_union`): resolved against
    /// the stored list under the writer lock.
    IndexUnion {
        tree: TreeName,
        key: Vec<u8>,
        ids: Vec<BindingId>,
    },
}

/// A fence compare-and-set to check before any write of the set.
#[derive(Debug)]
struct FenceCheck<'a> {
    leg: &'a LegId,
    key: Vec<u8>,
    expected: Option<&'a Fence>,
    new: &'a Fence,
}

/// Makes the store's failure sticky if dropped armed: a write set whose changes are only
/// partly in the trees (see `Store::apply`).
struct TornSetGuard<'a> {
    durability: &'a Durability,
    armed: bool,
}

impl TornSetGuard<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }

    /// The sticky failure, as an error that says "storage failure" to the node.
    fn fail(mut self, reason: &str) -> StoreError {
        self.armed = false;
        self.durability.fail(format!(
            "{reason}; restart the node to complete the set from its redo record"
        ))
    }
}

impl Drop for TornSetGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _sticky = self.durability.fail(
                "a write set was interrupted half-applied; restart the node to complete it from its redo record"
                    .to_string(),
            );
        }
    }
}

fn lock_writer(shared: &Shared) -> MutexGuard<'_, WriterState> {
    // WriterState changes only after a write has landed, in two plain assignments, so a
    // panic elsewhere cannot leave it half-updated.
    shared.writer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Puts an id's membership (live holds, outbox) as a key with an empty value, or removes it.
fn membership(tree: TreeName, key: Vec<u8>, live: bool) -> Op {
    if live {
        Op::Put {
            tree,
            key,
            value: Vec::new(),
        }
    } else {
        Op::Remove { tree, key }
    }
}

fn encode_writes(writes: &[Write]) -> Result<(Vec<FenceCheck<'_>>, Vec<Op>), StoreError> {
    let mut checks = Vec::new();
    let mut ops = Vec::with_capacity(writes.len());
    for write in writes {
        let op = match write {
            Write::Account(account) => Op::Put {
                tree: TreeName::Accounts,
                key: encode_key("person id", &account.person)?,
                value: encode_value("account", account)?,
            },
            Write::Binding(binding) => Op::Put {
                tree: TreeName::Bindings,
                key: encode_key("binding id", &binding.id)?,
                value: encode_value("binding", binding)?,
            },
            Write::BindingCopy(binding) => Op::Put {
                tree: TreeName::BindingCopies,
                key: encode_key("binding id", &binding.id)?,
                value: encode_value("binding copy", binding)?,
            },
            Write::GrantorIndex { person, bindings } => Op::IndexUnion {
                tree: TreeName::GrantorIndex,
                key: encode_key("person id", person)?,
                ids: bindings.clone(),
            },
            Write::GranteeIndex { person, bindings } => Op::IndexUnion {
                tree: TreeName::GranteeIndex,
                key: encode_key("person id", person)?,
                ids: bindings.clone(),
            },
            Write::Fence { leg, expected, new } => {
                let key = encode_key("leg id", leg)?;
                checks.push(FenceCheck {
                    leg,
                    key: key.clone(),
                    expected: expected.as_ref(),
                    new,
                });
                Op::Put {
                    tree: TreeName::Fences,
                    key,
                    value: encode_value("fence", new)?,
                }
            }
            Write::LiveHold { leg, live } => membership(TreeName::LiveHolds, encode_key("leg id", leg)?, *live),
            Write::Settlement(record) => Op::Put {
                tree: TreeName::Settlements,
                key: encode_key("settlement id", &record.request.settlement)?,
                value: encode_value("settlement", record)?,
            },
            Write::Refund(record) => Op::Put {
                tree: TreeName::Refunds,
                key: encode_key("refund id", &record.request.refund)?,
                value: encode_value("refund", record)?,
            },
            Write::Outbox { key, live } => membership(TreeName::Outbox, encode_key("outbox key", key)?, *live),
            Write::Credit(record) => Op::Put {
                tree: TreeName::Credits,
                key: encode_key("credit id", &record.credit)?,
                value: encode_value("credit", record)?,
            },
            Write::BindingSerial(serial) => Op::Put {
                tree: TreeName::Meta,
                key: META_BINDING_SERIAL.to_vec(),
                value: serial.to_be_bytes().to_vec(),
            },
            Write::Journal(entry) => Op::Journal {
                value: encode_value("journal entry", entry)?,
                account: match &entry.account {
                    Some(person) => Some((*person.as_bytes(), encode_key("person id", person)?)),
                    None => None,
                },
            },
            Write::Transfer(record) => Op::Put {
                tree: TreeName::Transfers,
                key: encode_key("transfer id", &record.request.transfer)?,
                value: encode_value("transfer", record)?,
            },
            Write::WalletUsage(usage) => Op::Put {
                tree: TreeName::WalletUsage,
                key: encode_key("person id", &usage.person)?,
                value: encode_value("wallet usage", usage)?,
            },
        };
        ops.push(op);
    }
    Ok((checks, ops))
}

/// Checks every fence against the value the writes before it leave (as `MemLedger` does: a
/// set applies as its writes in order, so a driver may apply several handlers' sets as one)
/// and resolves the set into whole-value puts and removes, giving journal entries the
/// sequence numbers from `first_journal_seq` on. Called under the writer lock, so nothing
/// changes meanwhile.
fn resolve(
    trees: &[sled::Tree],
    checks: &[FenceCheck<'_>],
    ops: Vec<Op>,
    first_journal_seq: u64,
) -> Result<(Vec<RedoOp>, Vec<u64>), StoreError> {
    let fences = &trees[TreeName::Fences.index()];
    // Fences this set wrote so far, by key.
    let mut written: HashMap<&[u8], &Fence> = HashMap::new();
    for check in checks {
        let found = match written.get(check.key.as_slice()) {
            Some(fence) => Some((*fence).clone()),
            None => match fences.get(check.key.as_slice())? {
                Some(bytes) => Some(decode::<Fence>(TreeName::Fences.name(), &bytes)?),
                None => None,
            },
        };
        if found.as_ref() != check.expected {
            return Err(StoreError::FenceConflict { leg: check.leg.clone() });
        }
        written.insert(check.key.as_slice(), check.new);
    }
    let tree = |name: TreeName| name as u8;
    // Accounts this set writes (before or after its journal entries): they are this node's.
    // Sets (a bulk load's) hold thousands of writes and are resolved under the writer lock:
    // lookups by account key are hashed.
    let accounts_written: HashSet<Vec<u8>> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Put {
                tree: TreeName::Accounts,
                key,
                ..
            } => Some(key.clone()),
            _ => None,
        })
        .collect();
    let mut resolved = Vec::with_capacity(ops.len() + 4);
    let mut journal_seqs = Vec::new();
    let mut next_seq = first_journal_seq;
    // Journal entries first: nothing points to them until the accounts written below index
    // them (see `account_value.rs`), so a reader never meets an index naming a missing entry.
    // Each entry of one of this node's accounts is noted for that account's index tail.
    // By account key: the person and the seqs of their entries in this set, in order; and
    // the keys in the order first indexed.
    let mut indexed: HashMap<Vec<u8>, ([u8; PERSON_ID_LEN], Vec<u64>)> = HashMap::new();
    let mut indexed_order: Vec<Vec<u8>> = Vec::new();
    let mut entries: Vec<Vec<u8>> = Vec::new();
    for op in &ops {
        let Op::Journal { value, account } = op else {
            continue;
        };
        entries.push(value.clone());
        // A person's history is read on their own node only (`records` refuses a person not
        // enrolled there), so an entry naming another node's account (a coordinator's
        // `MutualAidReceived`, which names the grantor's) is not indexed.
        if let Some((person, account_key)) = account {
            let local = accounts_written.contains(account_key)
                || trees[TreeName::Accounts.index()].contains_key(account_key)?;
            if local {
                indexed
                    .entry(account_key.clone())
                    .or_insert_with(|| {
                        indexed_order.push(account_key.clone());
                        (*person, Vec::new())
                    })
                    .1
                    .push(next_seq);
            }
        }
        journal_seqs.push(next_seq);
        next_seq = next_seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Exhausted("journal sequence exhausted".to_string()))?;
    }
    // One key per run of entries (see `journal_pages.rs`).
    let mut page_seq = first_journal_seq;
    for (len, value) in journal_pages::paginate(&entries) {
        resolved.push(RedoOp {
            tree: tree(TreeName::Journal),
            key: journal_key(page_seq).to_vec(),
            value: Some(value),
        });
        // `len` entries were numbered above without overflow, so this cannot overflow.
        page_seq = page_seq.saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    }
    // Index tails as this set leaves them, by account key: read once, then kept for a second
    // write of the same account in this set.
    let mut tails: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
    // `stored`: the account's stored value when the caller has read it already.
    let mut tail_of = |key: &[u8], stored: Option<&[u8]>, resolved: &mut Vec<RedoOp>| -> Result<Vec<u64>, StoreError> {
        if let Some(tail) = tails.get(key) {
            return Ok(tail.clone());
        }
        let name = TreeName::Accounts.name();
        let mut tail = match stored {
            Some(bytes) => account_value::decode_tail(name, bytes)?,
            None => match trees[TreeName::Accounts.index()].get(key)? {
                Some(bytes) => account_value::decode_tail(name, &bytes)?,
                None => Vec::new(),
            },
        };
        if let Some((person, seqs)) = indexed.get(key) {
            for seq in seqs {
                if tail.len() >= ACCOUNT_JOURNAL_TAIL_MAX {
                    // Full: the tail becomes a page of its own, written before the account
                    // value that no longer lists it.
                    let first = tail.first().copied().unwrap_or(*seq);
                    resolved.push(RedoOp {
                        tree: tree(TreeName::AccountJournal),
                        key: account_journal_key(person, first).to_vec(),
                        value: Some(encode_value("account journal page", &tail)?),
                    });
                    tail.clear();
                }
                tail.push(*seq);
            }
        }
        tails.insert(key.to_vec(), tail.clone());
        Ok(tail)
    };
    for op in ops {
        match op {
            Op::Put {
                tree: TreeName::Accounts,
                key,
                value,
            } => {
                let tail = tail_of(&key, None, &mut resolved)?;
                resolved.push(RedoOp {
                    tree: tree(TreeName::Accounts),
                    key,
                    value: Some(account_value::encode(&value, &tail)?),
                });
            }
            Op::Put { tree: name, key, value } => resolved.push(RedoOp {
                tree: tree(name),
                key,
                value: Some(value),
            }),
            Op::Remove { tree: name, key } => resolved.push(RedoOp {
                tree: tree(name),
                key,
                value: None,
            }),
            Op::IndexUnion { tree: name, key, ids } => {
                // An earlier op of this same set may have written the index: start from it.
                let written = resolved
                    .iter()
                    .rev()
                    .find(|op| op.tree == tree(name) && op.key == key)
                    .and_then(|op| op.value.clone());
                let stored = match written {
                    Some(bytes) => Some(bytes),
                    None => trees[name.index()].get(&key)?.map(|bytes| bytes.to_vec()),
                };
                let stored: Option<Vec<BindingId>> = match stored {
                    Some(bytes) => Some(decode(name.name(), &bytes)?),
                    None => None,
                };
                let union = exchange_core::ledger::index_union(stored.as_deref(), &ids);
                resolved.push(RedoOp {
                    tree: tree(name),
                    key,
                    value: Some(encode_value("binding index", &union)?),
                });
            }
            Op::Journal { .. } => {}
        }
    }
    // An indexed entry whose account this set does not write: the stored account is written
    // again with the longer tail.
    for key in &indexed_order {
        if accounts_written.contains(key) {
            continue;
        }
        let name = TreeName::Accounts.name();
        let stored = trees[TreeName::Accounts.index()]
            .get(key)?
            .ok_or_else(|| StoreError::Corrupt {
                tree: name,
                detail: "an indexed account vanished under the writer lock".to_string(),
            })?;
        let account = account_value::account_bytes(name, &stored)?;
        let tail = tail_of(key, Some(&stored), &mut resolved)?;
        resolved.push(RedoOp {
            tree: tree(TreeName::Accounts),
            key: key.clone(),
            value: Some(account_value::encode(&account, &tail)?),
        });
    }
    // An account written more than once (several handlers' sets applied as one, see
    // `Store::apply_in_sets`) is written once, with its last value: each put carries the
    // whole value and the journal tail as the set leaves it, so the earlier puts add nothing
    // and no index points to an account. Other records keep every put, in order (a reader
    // may meet a set applied in part, and a record must be there before an index naming it).
    let mut last_put: HashMap<&[u8], usize> = HashMap::new();
    for (at, op) in resolved.iter().enumerate() {
        if op.tree == tree(TreeName::Accounts) {
            last_put.insert(op.key.as_slice(), at);
        }
    }
    if last_put.len() < resolved.iter().filter(|op| op.tree == tree(TreeName::Accounts)).count() {
        let keep: Vec<bool> = resolved
            .iter()
            .enumerate()
            .map(|(at, op)| op.tree != tree(TreeName::Accounts) || last_put.get(op.key.as_slice()) == Some(&at))
            .collect();
        let mut keep = keep.into_iter();
        resolved.retain(|_| keep.next().unwrap_or(true));
    }
    Ok((resolved, journal_seqs))
}

/// In a tree of pages keyed by their first sequence number (the journal, the audit log): the
/// page whose first seq is the greatest at or before `seq`, i.e. the one that may hold it.
fn page_at_or_before(tree: &sled::Tree, seq: u64) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
    Ok(tree.range(..=journal_key(seq)).next_back().transpose()?)
}

/// Where a forward read of such a tree from `seq` starts: the page that may hold it, else
/// `seq`'s own key.
fn page_start(tree: &sled::Tree, seq: u64) -> Result<sled::IVec, StoreError> {
    Ok(page_at_or_before(tree, seq)?.map_or_else(|| sled::IVec::from(&journal_key(seq)), |(key, _)| key))
}

/// Applies resolved changes to the trees, one plain insert or remove each.
fn apply_resolved(trees: &[sled::Tree], ops: &[RedoOp]) -> Result<(), sled::Error> {
    for op in ops {
        // `decode` and `resolve` only produce indices of `TreeName::ALL`.
        let Some(tree) = trees.get(usize::from(op.tree)) else {
            continue;
        };
        match &op.value {
            Some(value) => tree.insert(op.key.as_slice(), value.as_slice())?,
            None => tree.remove(op.key.as_slice())?,
        };
    }
    Ok(())
}

/// At open: applies the last write set's redo record again (it may have been torn by a
/// crash; applying it twice is the same as once), makes that durable, then drops the record.
fn replay_redo(db: &sled::Db, files: &SledFiles, trees: &[sled::Tree]) -> Result<(), StoreError> {
    let redo_tree = &trees[TreeName::Redo.index()];
    let Some(bytes) = redo_tree.get(REDO_KEY)? else {
        return Ok(());
    };
    // Only the write-set trees (those before the audit log) may appear in a record.
    let ops = redo::decode(&bytes, TreeName::Audit.index())?;
    apply_resolved(trees, &ops)?;
    flush_durably(db, files)?;
    redo_tree.remove(REDO_KEY)?;
    flush_durably(db, files)?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the store at `path` and starts its flusher thread.
    pub fn open(path: &Path, config: &StoreConfig) -> Result<Store, StoreError> {
        let sled_config = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(config.flush_every_ms)
            // Many small writes, each set flushed: favour write throughput over disk space.
            .mode(sled::Mode::HighThroughput);
        let db = open_waiting_for_lock(&sled_config)?;
        let trees = TreeName::ALL
            .iter()
            .map(|tree| db.open_tree(tree.name()))
            .collect::<Result<Vec<_>, _>>()?;
        let files = SledFiles::open(path)?;
        replay_redo(&db, &files, &trees)?;
        let journal = &trees[TreeName::Journal.index()];
        let last_journal_seq = match journal.last()? {
            Some((key, value)) => journal_pages::last_seq(TreeName::Journal.name(), &key, &value)?,
            None => 0,
        };
        let next_journal_seq = last_journal_seq.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            tree: TreeName::Journal.name(),
            detail: "last journal sequence number is u64::MAX".to_string(),
        })?;
        // A changed newest audit record would be silently extended by the next append: refuse.
        let (next_audit_seq, audit_head_hash) = load_head(&trees[TreeName::Audit.index()])?;
        let binding_serial = match trees[TreeName::Meta.index()].get(META_BINDING_SERIAL)? {
            Some(bytes) => decode_u64(TreeName::Meta.name(), &bytes)?,
            None => 0,
        };
        let shared = Arc::new(Shared {
            db,
            files,
            trees,
            writer: Mutex::new(WriterState {
                next_journal_seq,
                last_ticket: 0,
                next_audit_seq,
                audit_head_hash,
                binding_serial_written: binding_serial,
                audit_pending: Vec::new(),
                audit_intent_pending: false,
            }),
            durability: Durability::new(last_journal_seq),
            binding_serial_reserved: AtomicU64::new(binding_serial),
        });
        let for_flusher = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("exchange-store-flusher".to_string())
            .spawn(move || {
                let shared = &*for_flusher;
                shared
                    .durability
                    .run_flusher(&shared.db, &shared.files, &|| settle_audit(shared))
            })
            .map_err(|error| StoreError::Flush(format!("could not start the flusher thread: {error}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                flusher: Some(flusher),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn tree(&self, tree: TreeName) -> &sled::Tree {
        // `trees` was built from `TreeName::ALL`, so every index is present.
        &self.shared().trees[tree.index()]
    }

    /// Applies one write set atomically: its redo record first, then its changes (see
    /// `redo.rs` for why that is atomic across a crash and why it is not a sled transaction).
    ///
    /// Every `Write::Fence` is a compare-and-set against the fence the writes before it leave
    /// (the stored one, unless the set wrote that leg's fence earlier): if any differs from
    /// its `expected`, nothing is written and the answer is `FenceConflict`. Journal entries get the next sequence numbers, in order. The writes
    /// are visible to reads at once but durable only once [`Store::durable`] of the returned
    /// ticket (or [`Store::flush_blocking`]) returns.
    ///
    /// An empty set writes nothing and returns the last ticket: a reply computed from reads
    /// alone may still depend on unflushed writes, and waiting on that ticket covers them.
    pub fn apply(&self, writes: &[Write]) -> Result<Applied, StoreError> {
        let shared = self.shared();
        shared.durability.check_failure()?;
        if writes.len() > WRITE_SET_LEN_MAX {
            return Err(StoreError::TooLarge {
                what: "write set",
                len: writes.len(),
                max: WRITE_SET_LEN_MAX,
            });
        }
        let (checks, mut ops) = encode_writes(writes)?;
        let mut writer = lock_writer(shared);
        let serial_written = writes
            .iter()
            .filter_map(|write| match write {
                Write::BindingSerial(serial) => Some(*serial),
                _ => None,
            })
            .max();
        if let Some(serial) = serial_written {
            // The stored serial only grows: of the set's serials only the highest is written,
            // and only if it is above the stored one (two in one set, highest first, would
            // otherwise leave the lower one stored).
            ops.retain(|op| !matches!(op, Op::Put { tree: TreeName::Meta, key, .. } if key == META_BINDING_SERIAL));
            if serial > writer.binding_serial_written {
                ops.push(Op::Put {
                    tree: TreeName::Meta,
                    key: META_BINDING_SERIAL.to_vec(),
                    value: serial.to_be_bytes().to_vec(),
                });
            }
        }
        if ops.is_empty() {
            return Ok(Applied {
                ticket: writer.last_ticket,
                journal_seqs: Vec::new(),
            });
        }
        // Taken before the write so nothing can fail between the write and its ticket.
        let ticket = following_ticket(&writer)?;
        let (resolved, journal_seqs) = resolve(&shared.trees, &checks, ops, writer.next_journal_seq)?;
        let record = redo::encode(&resolved)?;
        if record.len() > REDO_RECORD_BYTES_MAX {
            return Err(StoreError::TooLarge {
                what: "write set (encoded)",
                len: record.len(),
                max: REDO_RECORD_BYTES_MAX,
            });
        }
        // Intents appended before this set go into sled's log before any of its writes.
        write_audit_intents(shared, &mut writer)?;
        self.tree(TreeName::Redo)
            .insert(REDO_KEY, record)
            .map_err(|error| write_failed(shared, error))?;
        // From here until the last change is in, the set is torn: if anything stops us
        // (an error, a panic inside sled), only replaying the redo record at the next open
        // makes it whole, so the store must take no further write and acknowledge nothing.
        let torn = TornSetGuard {
            durability: &shared.durability,
            armed: true,
        };
        if let Err(error) = apply_resolved(&shared.trees, &resolved) {
            return Err(torn.fail(&format!("sled write failed inside a write set: {error}")));
        }
        torn.disarm();
        writer.last_ticket = ticket;
        if let Some(serial) = serial_written {
            writer.binding_serial_written = writer.binding_serial_written.max(serial);
            // A serial written without being handed out (a repair, a test) is not handed out
            // afterwards either.
            shared.binding_serial_reserved.fetch_max(serial, Ordering::SeqCst);
        }
        if let Some(last) = journal_seqs.last() {
            // `resolve` refuses a set that would use u64::MAX, so this cannot saturate.
            writer.next_journal_seq = last.saturating_add(1);
            shared.durability.note_journal(*last);
        }
        shared.durability.note_applied(ticket);
        Ok(Applied { ticket, journal_seqs })
    }

    /// Applies several handlers' write sets, concatenated in `writes` (set `i` ends at
    /// `set_ends[i]`), as one set: one redo record, one journal page run, each record written
    /// once for all of them. Each set must have been computed over the ones before it (see the
    /// core's `overlay.rs`); the result is the state of applying them one by one. A whole too
    /// large for one set is applied set by set instead (the returned ticket is the last one's).
    pub fn apply_in_sets(&self, writes: &[Write], set_ends: &[usize]) -> Result<Applied, StoreError> {
        let in_order = set_ends.windows(2).all(|pair| pair.first() <= pair.last());
        if !in_order || set_ends.last().is_some_and(|last| *last != writes.len()) {
            return Err(StoreError::Invalid(format!(
                "set ends {set_ends:?} do not split {} writes",
                writes.len()
            )));
        }
        match self.apply(writes) {
            Err(StoreError::TooLarge { .. }) if set_ends.len() > 1 => {
                let mut start = 0;
                let mut applied = Applied {
                    ticket: self.applied_ticket(),
                    journal_seqs: Vec::new(),
                };
                for &end in set_ends {
                    let set = writes.get(start..end).unwrap_or_default();
                    let one = self.apply(set)?;
                    applied.ticket = one.ticket;
                    applied.journal_seqs.extend(one.journal_seqs);
                    start = end;
                }
                Ok(applied)
            }
            other => other,
        }
    }

    /// Waits until the apply with `ticket` (and all before it) is on disk. Many waiters share
    /// one flush. After any flush failure this fails, now and forever.
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        self.shared().durability.wait_durable(ticket).await
    }

    /// Like [`Store::durable`], for a waiter in no hurry: does not start a flush of its own
    /// unless none comes within `LAZY_FLUSH_DELAY_MS` (see `durability.rs`).
    pub async fn durable_lazily(&self, ticket: u64) -> Result<(), StoreError> {
        self.shared().durability.wait_durable_lazily(ticket).await
    }

    /// Flushes everything applied so far, on the calling thread (for start-up, shutdown and
    /// tools; the node's request path uses [`Store::durable`]).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let shared = self.shared();
        shared
            .durability
            .flush_once(&shared.db, &shared.files, &|| settle_audit(shared))
    }

    /// Whether a failed flush or a torn write set has stopped the store: it then refuses
    /// writes and flushes until it is reopened.
    pub fn has_failed(&self) -> bool {
        self.shared().durability.check_failure().is_err()
    }

    /// The ticket of the last apply (0 before any).
    pub fn applied_ticket(&self) -> u64 {
        self.shared().durability.applied_ticket()
    }

    /// Counters, read from atomics without locks.
    pub fn stats(&self) -> StoreStats {
        self.shared().durability.stats()
    }

    /// Legs with a live hold, for recovery. Loads them all: their number is bounded by the
    /// holds in flight, not by the number of accounts.
    pub fn live_holds(&self) -> Result<Vec<LegId>, StoreError> {
        self.keys_of(TreeName::LiveHolds)
    }

    /// Items the coordinator must still deliver, for recovery.
    pub fn outbox(&self) -> Result<Vec<OutboxKey>, StoreError> {
        self.keys_of(TreeName::Outbox)
    }

    fn keys_of<T: serde::de::DeserializeOwned>(&self, tree: TreeName) -> Result<Vec<T>, StoreError> {
        self.tree(tree)
            .iter()
            .keys()
            .map(|key| decode(tree.name(), &key?))
            .collect()
    }

    /// Up to `limit` (at most `JOURNAL_PAGE_LEN_MAX`) journal entries with sequence numbers
    /// above `seq_after`, in order.
    pub fn journal_from(&self, seq_after: u64, limit: usize) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
        let Some(first) = seq_after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let limit = limit.min(JOURNAL_PAGE_LEN_MAX);
        let name = TreeName::Journal.name();
        let tree = self.tree(TreeName::Journal);
        // Start at the key holding `first`: its own, or the page before it that runs past it.
        let start = page_start(tree, first)?;
        let mut page = Vec::new();
        for item in tree.range(start..) {
            if page.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let entries = journal_pages::decode_value(name, &key, &value)?;
            let room = limit.saturating_sub(page.len());
            page.extend(entries.into_iter().filter(|(seq, _)| *seq >= first).take(room));
        }
        Ok(page)
    }

    /// The entries stored under the journal key that holds `seq` (empty if there is none).
    fn journal_page_of(&self, seq: u64) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
        match page_at_or_before(self.tree(TreeName::Journal), seq)? {
            Some((key, value)) => journal_pages::decode_value(TreeName::Journal.name(), &key, &value),
            None => Ok(Vec::new()),
        }
    }

    /// Like [`Store::journal_from`], but only entries already on disk: what a reader outside
    /// this node (the monitor's feed, a peer reconciling) may be shown. An entry applied but
    /// not yet flushed is visible to `journal_from` and could still vanish: a `kill -9` before
    /// the flush, or a flush that fails (a full disk) take it back, and after a restart its
    /// sequence number is given to another entry, so a reader that resumes after a cursor
    /// would keep the phantom and miss the new one. After a failed flush this stays at what
    /// the last good flush covered.
    pub fn durable_journal_from(&self, seq_after: u64, limit: usize) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
        let durable = self.shared().durability.flushed_journal_seq();
        let mut page = self.journal_from(seq_after, limit)?;
        page.retain(|(seq, _)| *seq <= durable);
        Ok(page)
    }

    /// The sequence number of the last journal entry on disk (see
    /// [`Store::durable_journal_from`]).
    pub fn durable_journal_seq(&self) -> u64 {
        self.shared().durability.flushed_journal_seq()
    }

    /// Up to `limit` (at most `JOURNAL_PAGE_LEN_MAX`) journal entries of `person`'s account
    /// with sequence numbers below `seq_before` (0: from the newest), newest first. The index
    /// is the account's tail, then its pages from the newest (see `account_value.rs`).
    pub fn journal_of_account(
        &self,
        person: &PersonId,
        seq_before: u64,
        limit: usize,
    ) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
        let limit = limit.min(JOURNAL_PAGE_LEN_MAX);
        let below = |seq: &u64| seq_before == 0 || *seq < seq_before;
        let index = TreeName::AccountJournal.name();
        let mut seqs: Vec<u64> = match self.tree(TreeName::Accounts).get(encode_key("person id", person)?)? {
            Some(bytes) => account_value::decode_tail(TreeName::Accounts.name(), &bytes)?,
            None => Vec::new(),
        };
        seqs.retain(below);
        seqs.reverse();
        if seqs.len() < limit {
            let start = account_journal_key(person.as_bytes(), 0);
            // A page under a first seq below `seq_before` may hold later ones too (filtered).
            let end = account_journal_key(person.as_bytes(), if seq_before == 0 { u64::MAX } else { seq_before });
            for item in self.tree(TreeName::AccountJournal).range(start..end).rev() {
                let (key, value) = item?;
                let seq_bytes = key.get(PERSON_ID_LEN..).ok_or_else(|| StoreError::Corrupt {
                    tree: index,
                    detail: format!("index key of {} bytes", key.len()),
                })?;
                let first = decode_u64(index, seq_bytes)?;
                let page = account_value::decode_page(index, first, &value)?;
                for seq in page.into_iter().rev().filter(below) {
                    // Strictly descending: a reader racing a spill may see the same seqs in
                    // the old tail and in the new page (written before the account value that
                    // drops them); each is listed once.
                    if seqs.last().is_none_or(|last| seq < *last) {
                        seqs.push(seq);
                    }
                }
                if seqs.len() >= limit {
                    break;
                }
            }
        }
        seqs.truncate(limit);
        // Consecutive seqs often share a journal page: decode each page once.
        let mut page: Vec<(u64, JournalEntry)> = Vec::new();
        let mut entries = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if !page.iter().any(|(stored, _)| *stored == seq) {
                page = self.journal_page_of(seq)?;
            }
            match page.iter().find(|(stored, _)| *stored == seq) {
                Some((_, entry)) => entries.push((seq, entry.clone())),
                None => {
                    return Err(StoreError::Corrupt {
                        tree: index,
                        detail: format!("journal entry {seq} is indexed but missing"),
                    });
                }
            }
        }
        Ok(entries)
    }

    /// The sequence number of the last journal entry (0 if the journal is empty).
    pub fn last_journal_seq(&self) -> Result<u64, StoreError> {
        match self.tree(TreeName::Journal).last()? {
            Some((key, value)) => journal_pages::last_seq(TreeName::Journal.name(), &key, &value),
            None => Ok(0),
        }
    }

    /// Calls `visit` with every account, one at a time, without loading them all; returns how
    /// many there were. Stops at the first entry that does not decode.
    pub fn for_each_account(&self, mut visit: impl FnMut(&Account)) -> Result<u64, StoreError> {
        let mut count: u64 = 0;
        for item in self.tree(TreeName::Accounts).iter().values() {
            let (account, _) = account_value::decode_account(TreeName::Accounts.name(), &item?)?;
            visit(&account);
            count = count.saturating_add(1);
        }
        Ok(count)
    }

    /// Number of accounts. O(n): sled's `len` walks the whole tree, so keep it off hot paths.
    pub fn account_count(&self) -> Result<u64, StoreError> {
        Ok(u64::try_from(self.tree(TreeName::Accounts).len()).unwrap_or(u64::MAX))
    }

    /// Reads, increments, writes and flushes the node's incarnation (1 on first start). Call
    /// once per node start, before anything that uses the incarnation leaves the node.
    pub fn bump_incarnation(&self) -> Result<u32, StoreError> {
        let incarnation = self.update_meta(META_INCARNATION, |old| {
            let next = old
                .unwrap_or(0)
                .checked_add(1)
                .and_then(|next| u32::try_from(next).ok());
            next.map(u64::from).ok_or_else(|| StoreError::Corrupt {
                tree: TreeName::Meta.name(),
                detail: format!("incarnation {old:?} cannot be incremented within u32"),
            })
        })?;
        self.flush_blocking()?;
        u32::try_from(incarnation).map_err(|_| StoreError::Corrupt {
            tree: TreeName::Meta.name(),
            detail: format!("incarnation {incarnation} exceeds u32"),
        })
    }

    /// The node's current incarnation (0 before the first `bump_incarnation`).
    pub fn incarnation(&self) -> Result<u32, StoreError> {
        let value = self.read_meta(META_INCARNATION)?.unwrap_or(0);
        u32::try_from(value).map_err(|_| StoreError::Corrupt {
            tree: TreeName::Meta.name(),
            detail: format!("incarnation {value} exceeds u32"),
        })
    }

    /// Reads a named u64 counter (the monitor-feed cursor, ...).
    pub fn meta_get(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.read_meta(&counter_key(name)?)
    }

    /// Writes a named u64 counter; returns the ticket to wait on for its durability.
    pub fn meta_put(&self, name: &str, value: u64) -> Result<u64, StoreError> {
        let key = counter_key(name)?;
        let shared = self.shared();
        shared.durability.check_failure()?;
        let mut writer = lock_writer(shared);
        let ticket = following_ticket(&writer)?;
        write_audit_intents(shared, &mut writer)?;
        self.tree(TreeName::Meta)
            .insert(key, &value.to_be_bytes())
            .map_err(|error| write_failed(shared, error))?;
        writer.last_ticket = ticket;
        shared.durability.note_applied(ticket);
        Ok(ticket)
    }

    /// Appends one record to the audit log, chained to the previous one; returns its seq and
    /// the ticket to wait on for its durability (like an apply's: a later apply's durable
    /// wait covers it too, since a flush writes everything applied before it).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<AuditAppended, StoreError> {
        let shared = self.shared();
        shared.durability.check_failure()?;
        let mut writer = lock_writer(shared);
        let seq = writer.next_audit_seq;
        let next_seq = seq.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            tree: AUDIT_TREE,
            detail: "audit sequence exhausted".to_string(),
        })?;
        let record = AuditRecord::chained(seq, writer.audit_head_hash, entry);
        let intent = record.is_intent();
        let ticket = following_ticket(&writer)?;
        let pending_bytes: usize = writer.audit_pending.iter().map(AuditRecord::approximate_bytes).sum();
        if pending_bytes.saturating_add(record.approximate_bytes()) > AUDIT_PAGE_BYTES_MAX {
            write_audit_pending(shared, &mut writer)?;
        }
        writer.audit_head_hash = record.hash;
        writer.audit_pending.push(record);
        writer.audit_intent_pending |= intent;
        writer.last_ticket = ticket;
        writer.next_audit_seq = next_seq;
        shared.durability.note_applied(ticket);
        // An intent must be in sled's log before any write of its action: every write path
        // writes pending intents first (see `audit.rs`), so intents of calls arriving
        // together share one page instead of costing a sled insert each.
        if writer.audit_pending.len() >= AUDIT_PAGE_RECORDS_MAX {
            write_audit_pending(shared, &mut writer)?;
        }
        Ok(AuditAppended { seq, ticket })
    }

    /// Up to `limit` (at most `AUDIT_PAGE_LEN_MAX`) audit records with seqs above
    /// `after_seq`, in order, as stored (not verified: see [`Store::verify_audit`]).
    pub fn audit_from(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        // Readers see every record appended so far: write the pending page first (unless the
        // store failed: then what is stored is all there is to read).
        if self.shared().durability.check_failure().is_ok() {
            write_audit_pending(self.shared(), &mut lock_writer(self.shared()))?;
        }
        let tree = self.tree(TreeName::Audit);
        // The page holding `first` starts at or before it.
        let start = page_start(tree, first)?;
        let limit = limit.min(AUDIT_PAGE_LEN_MAX);
        let mut records = Vec::new();
        for page in tree.range(start..).values() {
            for record in decode_audit_page(&page?)? {
                if records.len() >= limit {
                    return Ok(records);
                }
                if record.seq >= first {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }

    /// Walks the whole audit log up to its newest record now, checking seq continuity, every
    /// link and every hash; reports the first broken seq with a reason. `Err` only when the
    /// store cannot be read. O(records) time, O(1) memory but for unanswered intents.
    pub fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let last = {
            let mut writer = lock_writer(self.shared());
            if self.shared().durability.check_failure().is_ok() {
                write_audit_pending(self.shared(), &mut writer)?;
                writer.next_audit_seq.saturating_sub(1)
            } else {
                // Only what is stored can be verified; pending records were never acknowledged.
                let pending = u64::try_from(writer.audit_pending.len()).unwrap_or(u64::MAX);
                writer.next_audit_seq.saturating_sub(pending.saturating_add(1))
            }
        };
        verify_tree(self.tree(TreeName::Audit), Some(last))
    }

    fn read_meta(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.tree(TreeName::Meta).get(key)? {
            Some(bytes) => Ok(Some(decode_u64(TreeName::Meta.name(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Read-modify-write of one meta value under the writer lock; returns the new value.
    fn update_meta(
        &self,
        key: &[u8],
        update: impl FnOnce(Option<u64>) -> Result<u64, StoreError>,
    ) -> Result<u64, StoreError> {
        let shared = self.shared();
        shared.durability.check_failure()?;
        let mut writer = lock_writer(shared);
        let ticket = following_ticket(&writer)?;
        let new = update(self.read_meta(key)?)?;
        write_audit_intents(shared, &mut writer)?;
        self.tree(TreeName::Meta)
            .insert(key, &new.to_be_bytes())
            .map_err(|error| write_failed(shared, error))?;
        writer.last_ticket = ticket;
        shared.durability.note_applied(ticket);
        Ok(new)
    }

    fn get<T: serde::de::DeserializeOwned, K: serde::Serialize>(
        &self,
        tree: TreeName,
        what: &'static str,
        key: &K,
    ) -> Result<Option<T>, StoreError> {
        match self.tree(tree).get(encode_key(what, key)?)? {
            Some(bytes) => Ok(Some(decode(tree.name(), &bytes)?)),
            None => Ok(None),
        }
    }
}

/// Opens the database, waiting up to `OPEN_LOCK_WAIT_MS_MAX` for its file lock. A store
/// dropped in this process releases the lock only when sled's I/O threads have finished with
/// it, a few milliseconds later, so an in-place restart (tests, a node restarting its store)
/// would otherwise fail at random. Another live process keeps the lock, and we fail after
/// the wait.
pub(crate) fn open_waiting_for_lock(sled_config: &sled::Config) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        match sled_config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < Duration::from_millis(OPEN_LOCK_WAIT_MS_MAX) =>
            {
                std::thread::sleep(Duration::from_millis(OPEN_LOCK_RETRY_MS));
            }
            Err(error) => return Err(StoreError::Sled(error)),
        }
    }
}

/// A write that sled refused for a disk error (a full or failing device) makes the store
/// stop acknowledging for good, exactly like a failed flush: sled keeps such an error itself
/// (its "global error", cleared only by reopening) and would fail every later flush, but
/// making it our sticky failure at once also wakes every durability waiter with the reason.
fn write_failed(shared: &Shared, error: sled::Error) -> StoreError {
    if crate::error::is_disk_error(&error) {
        let _sticky = shared.durability.fail(format!("sled write: {error}"));
    }
    StoreError::Sled(error)
}

/// Writes the pending audit records as one page under the seq of its first record. Called
/// under the writer lock. A failed write fails the store for good: those records' tickets
/// were handed out, and a later flush must not report them durable.
fn write_audit_pending(shared: &Shared, writer: &mut WriterState) -> Result<(), StoreError> {
    let Some(first) = writer.audit_pending.first() else {
        return Ok(());
    };
    let key = journal_key(first.seq);
    let value = encode_value("audit page", &writer.audit_pending)?;
    if let Err(error) = shared.trees[TreeName::Audit.index()].insert(key, value) {
        let reason = format!("audit page not written: {error}");
        let _sticky = shared.durability.fail(reason);
        return Err(StoreError::Sled(error));
    }
    writer.audit_pending.clear();
    writer.audit_intent_pending = false;
    Ok(())
}

/// Before any other write to sled: the pending audit page, if it holds an intent (an intent
/// is in sled's log before any write of its action; outcomes and reads may wait longer).
fn write_audit_intents(shared: &Shared, writer: &mut WriterState) -> Result<(), StoreError> {
    if writer.audit_intent_pending {
        write_audit_pending(shared, writer)?;
    }
    Ok(())
}

/// The flusher's [`crate::durability::Settle`]: the pending audit page into sled, then the
/// applied ticket, both under the writer lock.
fn settle_audit(shared: &Shared) -> Result<u64, StoreError> {
    let mut writer = lock_writer(shared);
    write_audit_pending(shared, &mut writer)?;
    Ok(shared.durability.applied_ticket())
}

/// The ticket the next write gets.
fn following_ticket(writer: &WriterState) -> Result<u64, StoreError> {
    writer
        .last_ticket
        .checked_add(1)
        .ok_or_else(|| StoreError::Exhausted("durability tickets exhausted".to_string()))
}

fn counter_key(name: &str) -> Result<Vec<u8>, StoreError> {
    if name.is_empty() {
        return Err(StoreError::EmptyName);
    }
    if name.len() > META_NAME_BYTES_MAX {
        return Err(StoreError::TooLarge {
            what: "meta counter name",
            len: name.len(),
            max: META_NAME_BYTES_MAX,
        });
    }
    let mut key = META_COUNTER_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    Ok(key)
}

impl LedgerView for Store {
    type Error = StoreError;

    fn account(&self, person: &PersonId) -> Result<Option<Account>, StoreError> {
        let tree = TreeName::Accounts;
        match self.tree(tree).get(encode_key("person id", person)?)? {
            Some(bytes) => Ok(Some(account_value::decode_account(tree.name(), &bytes)?.0)),
            None => Ok(None),
        }
    }
    fn binding(&self, id: &BindingId) -> Result<Option<Binding>, StoreError> {
        self.get(TreeName::Bindings, "binding id", id)
    }
    fn binding_copy(&self, id: &BindingId) -> Result<Option<Binding>, StoreError> {
        self.get(TreeName::BindingCopies, "binding id", id)
    }
    fn bindings_of_grantor(&self, person: &PersonId) -> Result<Vec<BindingId>, StoreError> {
        Ok(self
            .get(TreeName::GrantorIndex, "person id", person)?
            .unwrap_or_default())
    }
    fn bindings_of_grantee(&self, person: &PersonId) -> Result<Vec<BindingId>, StoreError> {
        Ok(self
            .get(TreeName::GranteeIndex, "person id", person)?
            .unwrap_or_default())
    }
    fn fence(&self, leg: &LegId) -> Result<Option<Fence>, StoreError> {
        self.get(TreeName::Fences, "leg id", leg)
    }
    fn settlement(&self, id: &SettlementId) -> Result<Option<SettlementRecord>, StoreError> {
        self.get(TreeName::Settlements, "settlement id", id)
    }
    fn refund(&self, id: &RefundId) -> Result<Option<RefundRecord>, StoreError> {
        self.get(TreeName::Refunds, "refund id", id)
    }
    fn credit(&self, id: &CreditId) -> Result<Option<CreditRecord>, StoreError> {
        self.get(TreeName::Credits, "credit id", id)
    }
    /// Not a plain read: each call hands out a value no other call got. The core allocates a
    /// binding's id as this serial plus one, and the node's account shards bind concurrently;
    /// with a plain read two shards could take the same id and the second binding would
    /// overwrite the first. A value handed out but never written leaves a gap, which is
    /// harmless; a value written is never handed out again, also after a restart (the stored
    /// serial only grows, see `WriterState::binding_serial_written`).
    fn binding_serial(&self) -> Result<u64, StoreError> {
        Ok(self.shared().binding_serial_reserved.fetch_add(1, Ordering::SeqCst))
    }
    fn transfer(&self, id: &TransferId) -> Result<Option<TransferRecord>, StoreError> {
        self.get(TreeName::Transfers, "transfer id", id)
    }
    fn wallet_usage(&self, person: &PersonId) -> Result<Option<WalletUsage>, StoreError> {
        self.get(TreeName::WalletUsage, "person id", person)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            cache_capacity_bytes: 1 << 20,
            flush_every_ms: None,
        };
        let store = Store::open(dir.path(), &config).unwrap();
        (dir, store)
    }

    #[test]
    fn intents_are_in_sled_before_any_later_write_and_outcomes_wait() {
        let (_dir, store) = open_temp();
        let shared = store.shared();
        let entry = |outcome: &str, intent_seq: Option<u64>| AuditEntry {
            wall_ms: 1,
            actor: "bureau.500000.exchange".into(),
            action: "credit".into(),
            detail: "x".into(),
            outcome: outcome.into(),
            intent_seq,
        };
        let stored = || shared.trees[TreeName::Audit.index()].len();
        let read = store.append_audit(&entry("ok", None)).unwrap();
        assert_eq!(
            (stored(), lock_writer(shared).audit_pending.len()),
            (0, 1),
            "a read record waits"
        );
        let intent = store.append_audit(&entry(crate::AUDIT_INTENT, None)).unwrap();
        let second = store.append_audit(&entry(crate::AUDIT_INTENT, None)).unwrap();
        assert_eq!(
            (stored(), lock_writer(shared).audit_pending.len()),
            (0, 3),
            "intents wait for the next write"
        );
        store.apply(&[Write::BindingSerial(1)]).unwrap();
        assert_eq!(
            lock_writer(shared).audit_pending.len(),
            0,
            "the intents went out before the write"
        );
        assert_eq!(stored(), 1, "as one page with the record before them");
        let page = shared.trees[TreeName::Audit.index()]
            .get(journal_key(read.seq))
            .unwrap()
            .unwrap();
        let seqs: Vec<u64> = decode_audit_page(&page).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![read.seq, intent.seq, second.seq]);
        store.append_audit(&entry("ok", Some(intent.seq))).unwrap();
        assert_eq!(
            lock_writer(shared).audit_pending.len(),
            1,
            "its outcome waits for a flush"
        );
        store.flush_blocking().unwrap();
        assert_eq!((stored(), lock_writer(shared).audit_pending.len()), (2, 0));
        // A counter write (the monitor's cursor) is a write like any other.
        let third = store.append_audit(&entry(crate::AUDIT_INTENT, None)).unwrap();
        store.meta_put("cursor", 7).unwrap();
        assert_eq!((stored(), lock_writer(shared).audit_pending.len()), (3, 0));
        let page = shared.trees[TreeName::Audit.index()]
            .get(journal_key(third.seq))
            .unwrap()
            .unwrap();
        assert_eq!(decode_audit_page(&page).unwrap().len(), 1);
        assert!(store.verify_audit().unwrap().ok());
    }

    #[test]
    fn sets_too_many_for_one_apply_one_by_one_and_bad_bounds_change_nothing() {
        let (_dir, store) = open_temp();
        let half = WRITE_SET_LEN_MAX / 2 + 1;
        let writes: Vec<Write> = (1..=3 * half as u64).map(Write::BindingSerial).collect();
        let before = store.applied_ticket();
        let wrong = store.apply_in_sets(&writes, &[half, 2 * half]).unwrap_err();
        assert!(matches!(wrong, StoreError::Invalid(_)), "{wrong}");
        let unordered = store.apply_in_sets(&writes, &[2 * half, half, 3 * half]).unwrap_err();
        assert!(matches!(unordered, StoreError::Invalid(_)), "{unordered}");
        assert_eq!(store.applied_ticket(), before, "a refused call wrote nothing");
        let applied = store.apply_in_sets(&writes, &[half, 2 * half, 3 * half]).unwrap();
        assert_eq!(applied.ticket, before + 3, "three sets, one after the other");
        assert_eq!(lock_writer(store.shared()).binding_serial_written, 3 * half as u64);
        // One set alone stays refused: nothing to split it by.
        let alone = store.apply_in_sets(&writes, &[writes.len()]).unwrap_err();
        assert!(matches!(alone, StoreError::TooLarge { .. }), "{alone}");
    }

    /// sled cannot be made to fail a flush on demand, so the failure is injected where a real
    /// one lands; everything after it (publication, stickiness) is the real path.
    #[test]
    fn a_flush_failure_reaches_every_waiter_and_stays() {
        let (_dir, store) = open_temp();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let first = store.apply(&[Write::BindingSerial(1)]).unwrap();
        runtime.block_on(store.durable(first.ticket)).unwrap();

        // Stop any flush from starting, so the waiters are really parked when it fails.
        let flush_turn = store.shared().durability.hold_flush_turn_for_tests();
        let second = store.apply(&[Write::BindingSerial(2)]).unwrap();
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let store = store.clone();
                runtime.spawn(async move { store.durable(second.ticket).await })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));
        store.shared().durability.fail("disk on fire".to_string());
        drop(flush_turn);
        runtime.block_on(async {
            for waiter in waiters {
                assert!(matches!(waiter.await.unwrap(), Err(StoreError::Flush(_))));
            }
            // Sticky: even the ticket flushed before no longer acknowledges.
            assert!(matches!(store.durable(first.ticket).await, Err(StoreError::Flush(_))));
        });
        // And the store takes no more writes.
        assert!(matches!(store.flush_blocking(), Err(StoreError::Flush(_))));
        assert!(matches!(
            store.apply(&[Write::BindingSerial(3)]),
            Err(StoreError::Flush(_))
        ));
        assert!(matches!(store.meta_put("cursor", 1), Err(StoreError::Flush(_))));
        assert!(matches!(store.bump_incarnation(), Err(StoreError::Flush(_))));
        // Reads still work, for diagnosis.
        assert_eq!(store.binding_serial().unwrap(), 2);
    }

    fn entry(fen: u64) -> JournalEntry {
        JournalEntry {
            kind: exchange_core::records::JournalKind::Credit,
            wall_ms: 1_700_000_000_000,
            amount: exchange_core::Money::from_fen(fen).unwrap(),
            account: None,
            leg: None,
            binding: None,
            settlement: None,
            counterparty: None,
            reference: None,
        }
    }

    /// What a crash inside an apply leaves: the set's redo record and only part of its
    /// changes on disk. Open must make the set whole; an earlier set must stay as it was.
    #[test]
    fn a_write_set_torn_by_a_crash_is_made_whole_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            cache_capacity_bytes: 1 << 20,
            flush_every_ms: None,
        };
        let serial = |store: &Store| store.read_meta(META_BINDING_SERIAL).unwrap();
        {
            let store = Store::open(dir.path(), &config).unwrap();
            store
                .apply(&[Write::Journal(entry(1)), Write::BindingSerial(7)])
                .unwrap();
            // The next set, applied by hand up to the crash point: its record, then the first
            // of its changes (its two entries, stored as one journal page), then the lights go
            // out before the serial (a flush stands in for the disk having taken what sled was
            // given).
            let writes = [
                Write::Journal(entry(2)),
                Write::BindingSerial(9),
                Write::Journal(entry(3)),
            ];
            let (checks, ops) = encode_writes(&writes).unwrap();
            let shared = store.shared();
            let (resolved, seqs) = resolve(&shared.trees, &checks, ops, 2).unwrap();
            assert_eq!(seqs, vec![2, 3]);
            store
                .tree(TreeName::Redo)
                .insert(REDO_KEY, redo::encode(&resolved).unwrap())
                .unwrap();
            assert_eq!(resolved.len(), 2);
            apply_resolved(&shared.trees, &resolved[..1]).unwrap();
            shared.db.flush().unwrap();
            assert_eq!(store.last_journal_seq().unwrap(), 3);
            assert_eq!(serial(&store), Some(7));
        }
        let store = Store::open(dir.path(), &config).unwrap();
        let journal: Vec<_> = store.journal_from(0, 10).unwrap();
        assert_eq!(journal, vec![(1, entry(1)), (2, entry(2)), (3, entry(3))]);
        assert_eq!(serial(&store), Some(9));
        // The record is gone once replayed, and new entries continue the journal.
        assert!(store.tree(TreeName::Redo).get(REDO_KEY).unwrap().is_none());
        assert_eq!(store.apply(&[Write::Journal(entry(4))]).unwrap().journal_seqs, vec![4]);
    }

    /// Redo records name trees by index: the order is part of the disk format.
    #[test]
    fn tree_indices_are_part_of_the_disk_format() {
        let names: Vec<&str> = TreeName::ALL.iter().map(|tree| tree.name()).collect();
        assert_eq!(
            names,
            [
                "accounts",
                "bindings",
                "binding_copies",
                "grantor_index",
                "grantee_index",
                "fences",
                "live_holds",
                "settlements",
                "refunds",
                "outbox",
                "credits",
                "transfers",
                "wallet_usage",
                "journal",
                "account_journal",
                "meta",
                AUDIT_TREE,
                "redo",
            ]
        );
        for (index, tree) in TreeName::ALL.iter().enumerate() {
            assert_eq!(tree.index(), index);
        }
    }

    /// A record naming the audit log or the redo tree itself is corrupt: no write set
    /// touches them.
    #[test]
    fn a_redo_record_naming_a_tree_outside_the_write_sets_fails_open() {
        for tree in [TreeName::Audit, TreeName::Redo] {
            let dir = tempfile::tempdir().unwrap();
            {
                let db = sled::Config::new().path(dir.path()).open().unwrap();
                let record = redo::encode(&[RedoOp {
                    tree: tree as u8,
                    key: b"k".to_vec(),
                    value: None,
                }])
                .unwrap();
                db.open_tree("redo").unwrap().insert(REDO_KEY, record).unwrap();
                db.flush().unwrap();
            }
            let error = Store::open(dir.path(), &StoreConfig::default()).unwrap_err();
            assert!(matches!(error, StoreError::Corrupt { tree: "redo", .. }), "{error}");
        }
    }

    /// A set too large for one redo record in sled's log is refused whole, before any write.
    #[test]
    fn a_write_set_over_the_redo_record_limit_is_refused_and_writes_nothing() {
        let (_dir, store) = open_temp();
        // Each journal entry costs ~40 bytes in the record: 4,000 of them are well over 100 KiB.
        let entries = 4_000;
        let writes: Vec<Write> = (0..entries as u64).map(|fen| Write::Journal(entry(fen + 1))).collect();
        let error = store.apply(&writes).unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::TooLarge {
                    what: "write set (encoded)",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(store.last_journal_seq().unwrap(), 0);
        assert!(store.tree(TreeName::Redo).get(REDO_KEY).unwrap().is_none());
        // The store is not failed: a normal set still goes through.
        assert_eq!(store.apply(&[Write::Journal(entry(1))]).unwrap().journal_seqs, vec![1]);
    }

    /// Anything that stops a set half-applied (here a panic in the middle) leaves the store
    /// failed for good, so no later set can overwrite the torn set's redo record.
    #[test]
    fn a_set_interrupted_half_applied_fails_the_store() {
        let (_dir, store) = open_temp();
        let durability = &store.shared().durability;
        let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _torn = TornSetGuard {
                durability,
                armed: true,
            };
            panic!("sled panicked inside a write set");
        }));
        assert!(interrupted.is_err());
        assert!(matches!(
            store.apply(&[Write::BindingSerial(1)]),
            Err(StoreError::Flush(_))
        ));
        // A set that completes disarms its guard and fails nothing.
        let (_dir, healthy) = open_temp();
        healthy.apply(&[Write::BindingSerial(1)]).unwrap();
        assert!(healthy.flush_blocking().is_ok());
    }

    /// A redo record that does not decode fails open with the reason, rather than being
    /// skipped (skipping it could leave a torn set behind).
    #[test]
    fn a_garbage_redo_record_fails_open_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            db.open_tree("redo")
                .unwrap()
                .insert(REDO_KEY, &[1, 0, 0, 0, 9][..])
                .unwrap();
            db.flush().unwrap();
        }
        let error = Store::open(dir.path(), &StoreConfig::default()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { tree: "redo", .. }), "{error}");
    }

    /// Readers outside the node see a journal entry only once it is on disk, and never one
    /// that a failed flush left only in memory.
    #[test]
    fn only_flushed_journal_entries_are_durable_and_a_failed_flush_hides_the_rest() {
        let (dir, store) = open_temp();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let flush_turn = store.shared().durability.hold_flush_turn_for_tests();
        let first = store.apply(&[Write::Journal(entry(1))]).unwrap();
        assert_eq!(store.journal_from(0, 10).unwrap().len(), 1);
        assert_eq!(store.durable_journal_from(0, 10).unwrap(), vec![]);
        assert_eq!(store.durable_journal_seq(), 0);
        drop(flush_turn);
        runtime.block_on(store.durable(first.ticket)).unwrap();
        assert_eq!(store.durable_journal_from(0, 10).unwrap(), vec![(1, entry(1))]);
        assert_eq!(store.durable_journal_seq(), 1);

        let flush_turn = store.shared().durability.hold_flush_turn_for_tests();
        store
            .apply(&[Write::Journal(entry(2)), Write::Journal(entry(3))])
            .unwrap();
        store.shared().durability.fail("disk full".to_string());
        drop(flush_turn);
        assert!(store.flush_blocking().is_err());
        assert_eq!(store.journal_from(0, 10).unwrap().len(), 3, "in sled's memory");
        assert_eq!(store.durable_journal_from(0, 10).unwrap(), vec![(1, entry(1))]);
        assert_eq!(store.durable_journal_from(1, 10).unwrap(), vec![]);

        // Reopened, what is on disk is durable from the start.
        drop(store);
        let config = StoreConfig {
            cache_capacity_bytes: 1 << 20,
            flush_every_ms: None,
        };
        let reopened = Store::open(dir.path(), &config).unwrap();
        let on_disk = reopened.last_journal_seq().unwrap();
        assert_eq!(reopened.durable_journal_seq(), on_disk);
        assert_eq!(reopened.durable_journal_from(0, 10).unwrap().len() as u64, on_disk);
    }
}
