//! The audit log: appends chain and survive a reopen; a changed, re-hashed, removed or
//! misplaced record is found by the verifier at its seq; a changed newest record stops the
//! store from opening (the offline verifier still reports it).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use exchange_core::ledger::Write;
use exchange_store::{AUDIT_GENESIS_HASH, AUDIT_INTENT, AuditEntry, AuditRecord, Store, StoreError, verify_audit_at};

fn entry(action: &str, outcome: &str, intent_seq: Option<u64>) -> AuditEntry {
    AuditEntry {
        wall_ms: 1_700_000_000_000,
        actor: "bureau.500000.exchange serial=1f".into(),
        action: action.into(),
        detail: format!("{action} request"),
        outcome: outcome.into(),
        intent_seq,
    }
}

/// Six records: three actions (intent + outcome each, one refused), one read, one intent whose
/// outcome never came (as after a crash), one more read.
fn fill(store: &Store) {
    for (action, outcome) in [("open_account", "ok"), ("settle", "refused: insufficient_balance")] {
        let intent = store.append_audit(&entry(action, AUDIT_INTENT, None)).unwrap();
        store.append_audit(&entry(action, outcome, Some(intent.seq))).unwrap();
    }
    store.append_audit(&entry("get_account", "ok", None)).unwrap();
    store.append_audit(&entry("credit", AUDIT_INTENT, None)).unwrap();
    store.append_audit(&entry("records", "ok", None)).unwrap();
}

/// A closed store holding the records of [`fill`], flushed.
fn filled_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store);
    store.flush_blocking().unwrap();
    dir
}

/// sled releases a dropped database's file lock a little later; wait for it.
fn open_raw(path: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(error) if started.elapsed() < Duration::from_secs(5) => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// How the records of the raw `audit` tree are laid out: (key, records) per stored value.
type Pages = Vec<(u64, Vec<AuditRecord>)>;

fn decode_page(value: &[u8]) -> Vec<AuditRecord> {
    rmp_serde::from_slice::<Vec<AuditRecord>>(value)
        .unwrap_or_else(|_| vec![rmp_serde::from_slice::<AuditRecord>(value).unwrap()])
}

/// Reads the raw `audit` tree, lets `change` edit its pages, and writes them back (a page of
/// one record is written as a record alone, the layout of stores from before pages).
fn rewrite(path: &Path, change: impl FnOnce(&mut Pages)) {
    let db = open_raw(path);
    let tree = db.open_tree("audit").unwrap();
    let mut pages: Pages = tree
        .iter()
        .map(|item| {
            let (key, value) = item.unwrap();
            (
                u64::from_be_bytes(key.as_ref().try_into().unwrap()),
                decode_page(&value),
            )
        })
        .collect();
    change(&mut pages);
    tree.clear().unwrap();
    for (key, records) in pages {
        let value = match records.as_slice() {
            [alone] => rmp_serde::to_vec(alone).unwrap(),
            _ => rmp_serde::to_vec(&records).unwrap(),
        };
        tree.insert(key.to_be_bytes(), value).unwrap();
    }
    db.flush().unwrap();
}

/// Changes record `seq` wherever its page is.
fn tamper(path: &Path, seq: u64, change: impl FnOnce(&mut AuditRecord)) {
    rewrite(path, |pages| {
        let record = pages
            .iter_mut()
            .flat_map(|(_, records)| records.iter_mut())
            .find(|record| record.seq == seq)
            .expect("no such record");
        change(record);
    });
}

/// Splits the log into pages starting at `starts` (each record alone when a page has one).
fn repage(path: &Path, starts: &[u64]) {
    rewrite(path, |pages| {
        let all: Vec<AuditRecord> = pages.drain(..).flat_map(|(_, records)| records).collect();
        for record in all {
            if starts.contains(&record.seq) || pages.is_empty() {
                pages.push((record.seq, Vec::new()));
            }
            pages.last_mut().unwrap().1.push(record);
        }
    });
}

#[test]
fn appends_chain_survive_reopen_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        fill(&store);
        let verification = store.verify_audit().unwrap();
        assert!(verification.ok(), "{verification:?}");
        assert_eq!(verification.records, 7);
        store.flush_blocking().unwrap();
    }
    let store = open(dir.path());
    let all = store.audit_from(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(all[0].prev_hash, AUDIT_GENESIS_HASH);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(all[1].intent_seq, Some(1));
    assert_eq!(all[3].outcome, "refused: insufficient_balance");
    // Paging.
    let page = store.audit_from(2, 3).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(store.audit_from(7, 10).unwrap().is_empty());
    assert!(store.audit_from(u64::MAX, 10).unwrap().is_empty());

    // The chain continues after the reopen, from the stored head.
    let appended = store.append_audit(&entry("freeze", "ok", None)).unwrap();
    assert_eq!(appended.seq, 8);
    let verification = store.verify_audit().unwrap();
    assert!(verification.ok(), "{verification:?}");
    assert_eq!(verification.records, 8);
    assert_eq!(verification.head_seq, 8);
    assert_eq!(verification.head_hash, store.audit_from(7, 1).unwrap()[0].hash);
    // The credit intent (seq 6) has no outcome: shown, not a break.
    assert_eq!(verification.intents_without_outcome, 1);
    assert_eq!(verification.open_intents, vec![6]);
    drop(store);
    assert_eq!(verify_audit_at(dir.path()).unwrap(), verification);
}

#[test]
fn audit_appends_share_the_tickets_of_applies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let intent = store.append_audit(&entry("settle", AUDIT_INTENT, None)).unwrap();
    let applied = store.apply(&[Write::BindingSerial(1)]).unwrap();
    assert!(applied.ticket > intent.ticket);
    // Waiting for the action's ticket covers the intent written before it.
    runtime.block_on(store.durable(applied.ticket)).unwrap();
    assert!(store.stats().flushed_ticket >= intent.ticket);
    let outcome = store.append_audit(&entry("settle", "ok", Some(intent.seq))).unwrap();
    assert_eq!(outcome.ticket, applied.ticket + 1);
    runtime.block_on(store.durable(outcome.ticket)).unwrap();
    // Long texts are cut, not refused.
    let long = AuditEntry {
        detail: "x".repeat(1 << 20),
        ..entry("bind", "ok", None)
    };
    store.append_audit(&long).unwrap();
    assert!(store.verify_audit().unwrap().ok());
}

#[test]
fn a_changed_record_is_found_at_its_seq() {
    let dir = filled_store();
    tamper(dir.path(), 3, |record| record.detail = "settle nothing to see".into());
    // The newest record is intact, so the node still opens; the verifier finds seq 3.
    let store = open(dir.path());
    let verification = store.verify_audit().unwrap();
    let broken = verification.broken.clone().expect("tampering not detected");
    assert_eq!(broken.seq, 3, "{broken:?}");
    assert!(broken.reason.contains("hash"), "{broken:?}");
    assert_eq!(verification.records, 2);
    assert_eq!(verification.head_seq, 2);
    drop(store);
    assert_eq!(verify_audit_at(dir.path()).unwrap().broken, Some(broken));
}

#[test]
fn a_changed_record_with_a_recomputed_hash_breaks_the_next_link() {
    let dir = filled_store();
    tamper(dir.path(), 4, |record| {
        record.outcome = "ok".into();
        record.hash = record.compute_hash();
    });
    let store = open(dir.path());
    let broken = store.verify_audit().unwrap().broken.expect("tampering not detected");
    assert_eq!(broken.seq, 5, "{broken:?}");
    assert!(broken.reason.contains("prev_hash"), "{broken:?}");
}

#[test]
fn a_removed_record_is_found() {
    let dir = filled_store();
    // Out of the middle of a page (not the newest: a broken newest page stops the store
    // from opening, as a changed newest record does).
    repage(dir.path(), &[5]);
    rewrite(dir.path(), |pages| pages[0].1.retain(|record| record.seq != 3));
    let store = open(dir.path());
    let broken = store.verify_audit().unwrap().broken.expect("removal not detected");
    assert_eq!(broken.seq, 3, "{broken:?}");
    assert!(broken.reason.contains("missing"), "{broken:?}");
    drop(store);

    // Removing the first record is found too, whether a page starts with it or it is alone.
    rewrite(dir.path(), |pages| pages[0].1.retain(|record| record.seq != 1));
    assert_eq!(verify_audit_at(dir.path()).unwrap().broken.unwrap().seq, 1);
    let dir = filled_store();
    repage(dir.path(), &[2]);
    rewrite(dir.path(), |pages| pages.retain(|(key, _)| *key != 1));
    let broken = verify_audit_at(dir.path()).unwrap().broken.unwrap();
    assert_eq!(broken.seq, 1, "{broken:?}");
    assert!(broken.reason.contains("missing"), "{broken:?}");
}

#[test]
fn a_record_moved_to_another_seq_or_garbage_is_found() {
    let dir = filled_store();
    // Pages 1..3, 4..5, 6..7; then page 4 starts with a copy of record 2.
    repage(dir.path(), &[4, 6]);
    rewrite(dir.path(), |pages| {
        let second = pages[0].1[1].clone();
        pages[1].1[0] = second;
    });
    let broken = verify_audit_at(dir.path()).unwrap().broken.unwrap();
    assert_eq!(broken.seq, 4, "{broken:?}");
    assert!(broken.reason.contains("says it is 2"), "{broken:?}");
    // Garbage where a page should be.
    {
        let db = open_raw(dir.path());
        db.open_tree("audit")
            .unwrap()
            .insert(4u64.to_be_bytes(), b"garbage".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let broken = verify_audit_at(dir.path()).unwrap().broken.unwrap();
    assert_eq!(broken.seq, 4, "{broken:?}");
    assert!(broken.reason.contains("does not decode"), "{broken:?}");
}

#[test]
fn an_outcome_without_its_intent_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store);
    // An outcome for an intent already answered (seq 1 was answered by seq 2).
    store.append_audit(&entry("open_account", "ok", Some(1))).unwrap();
    let broken = store.verify_audit().unwrap().broken.unwrap();
    assert_eq!(broken.seq, 8);
}

#[test]
fn a_changed_newest_record_stops_the_store_from_opening() {
    let dir = filled_store();
    tamper(dir.path(), 7, |record| record.actor = "someone else".into());
    match Store::open(dir.path(), &test_config()) {
        Err(StoreError::Corrupt { tree: "audit", detail }) => assert!(detail.contains("hash"), "{detail}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The offline verifier does not refuse: it reports.
    let verification = verify_audit_at(dir.path()).unwrap();
    assert_eq!(verification.broken.unwrap().seq, 7);
    assert_eq!(verification.records, 6);
}

#[test]
fn the_offline_verifier_needs_a_store() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(verify_audit_at(dir.path()), Err(StoreError::Corrupt { .. })));
    // A store without any audit record verifies, empty.
    drop(open(dir.path()));
    let verification = verify_audit_at(dir.path()).unwrap();
    assert!(verification.ok());
    assert_eq!(verification.records, 0);
}

#[test]
fn pages_and_records_alone_both_verify_page_and_continue() {
    let dir = filled_store();
    // Records 1 and 2 alone (the layout before pages), then pages 3..5 and 6..7.
    repage(dir.path(), &[2, 3, 6]);
    let store = open(dir.path());
    let verification = store.verify_audit().unwrap();
    assert!(verification.ok(), "{verification:?}");
    assert_eq!(verification.records, 7);
    let seqs = |records: Vec<AuditRecord>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.audit_from(0, 100).unwrap()), (1..=7).collect::<Vec<_>>());
    // Pages start and end inside a page and across pages.
    assert_eq!(seqs(store.audit_from(1, 1).unwrap()), vec![2]);
    assert_eq!(seqs(store.audit_from(3, 2).unwrap()), vec![4, 5]);
    assert_eq!(seqs(store.audit_from(4, 10).unwrap()), vec![5, 6, 7]);
    // The chain goes on from the newest page, and a pending record is read and verified.
    assert_eq!(store.append_audit(&entry("freeze", "ok", None)).unwrap().seq, 8);
    assert_eq!(seqs(store.audit_from(6, 10).unwrap()), vec![7, 8]);
    assert!(store.verify_audit().unwrap().ok());
}

#[test]
fn many_appends_are_stored_in_bounded_pages_and_kept_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let appended = 3 * exchange_store::AUDIT_PAGE_RECORDS_MAX as u64 + 5;
    {
        let store = open(dir.path());
        for _ in 0..appended {
            store.append_audit(&entry("get_account", "ok", None)).unwrap();
        }
        // No flush: closing the store writes what is pending.
    }
    let mut pages = Vec::new();
    rewrite(dir.path(), |stored| pages = stored.clone());
    assert!(pages.len() >= 4, "{} pages", pages.len());
    assert!(pages.len() < appended as usize / 10, "{} pages", pages.len());
    for (key, records) in &pages {
        assert_eq!(*key, records[0].seq);
        assert!(records.len() <= exchange_store::AUDIT_PAGE_RECORDS_MAX);
    }
    let verification = verify_audit_at(dir.path()).unwrap();
    assert!(verification.ok(), "{verification:?}");
    assert_eq!(verification.records, appended);
}

#[test]
fn audit_pages_never_become_sled_blob_files() {
    // sled writes a log item over ~128 KiB to a blob file (one file created and synced per
    // item, which is slow); a whole leaf of the audit tree is one such item when sled rewrites it. Records of every size, the
    // largest summaries included, must keep every leaf under that.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for index in 0..3_000usize {
            let detail = "d".repeat([200, 1_000, 5_000][index % 3]);
            store
                .append_audit(&AuditEntry {
                    detail,
                    ..entry("settle", "ok", None)
                })
                .unwrap();
            if index % 40 == 0 {
                store.flush_blocking().unwrap();
            }
        }
        store.flush_blocking().unwrap();
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "audit pages were written as sled blob files");
    assert!(verify_audit_at(dir.path()).unwrap().ok());
}
