//! Grouped durability: tickets, the one background flusher, and flush statistics.
//!
//! Every apply gets a ticket (1, 2, 3, ... in apply order). A caller that must not acknowledge
//! before its writes are on disk waits for its ticket. One flusher thread loops: wait until a
//! ticket above the flushed one is requested, note the highest applied ticket, call
//! `Db::flush()` once, publish that ticket as flushed. Everything applied while one flush runs
//! shares the next one, so under load one fsync covers many applies (sled does ~8,000 flushed
//! single writes per second, but >100,000 when ~100 writes share a flush).
//!
//! A waiter that is in no hurry (an acknowledgement nobody waits on) asks lazily: its ticket
//! rides on the next flush someone else asks for, or, if nobody does, on a flush the flusher
//! makes `LAZY_FLUSH_DELAY_MS` later. At low load that saves a flush per settlement; under
//! load there is always a flush coming anyway.
//!
//! We call the blocking `Db::flush()` on our own thread, never `flush_async`: concurrent
//! `flush_async` calls deadlock in sled 0.34.7 (spacejam/sled#1308).
//!
//! `Db::flush()` alone is not enough: sled 0.34.7 writes its log with
//! `sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`, which hands the pages to the device but
//! neither flushes the device's write cache nor commits the file's new size (sled only
//! `fsync`s from its own periodic flusher, which we do not run). That survives a killed
//! process, not a power cut or a crashed VM. So every flush ends with `fdatasync` of sled's
//! log file ([`flush_durably`]).
//!
//! Nor is the log the only file: sled 0.34.7 writes any log item larger than ~128 KiB (a
//! leaf whose values add up to that much) to a file of its own under `blobs/`, and never
//! `fsync`s those files or that directory. So a flush also `fsync`s the blob files it has not
//! synced yet, and then the directory, before the log's `fdatasync` returns and so before
//! anything is acknowledged. Which files: those listed *before* `Db::flush()` (and after the
//! flush's target ticket was read), synced *after* it. sled reserves a log item before it
//! creates and writes the item's blob file, and `Db::flush()` waits for every reservation made
//! before it is called, so every listed file is complete once it returns; and every blob of an
//! apply covered by the flush was created before the listing (the apply returned before the
//! target was read). A file created after the listing is synced by the next flush, before
//! anything after it is acknowledged. (sled's own `sync_file_range` may put log bytes naming a
//! blob on the disk before the blob itself; a power cut in that window loses only writes not
//! yet acknowledged.) Our trees keep values small so blobs stay rare (see `audit.rs`), but a
//! leaf of large settlement records can still reach the threshold.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::StoreError;

/// sled 0.34.7 keeps its whole log in this one file under the store's directory.
pub(crate) const SLED_LOG_FILE: &str = "db";
/// ... and items too large for the log in files of this directory, one per item.
pub(crate) const SLED_BLOB_DIR: &str = "blobs";

fn io_error(error: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(error))
}

/// The files of a sled store that a flush must make durable (see the module's comment).
#[derive(Debug)]
pub(crate) struct SledFiles {
    /// Opened read-only: `fdatasync` needs no write access.
    log: File,
    blob_dir: PathBuf,
    /// Names of the blob files already `fsync`ed (pruned to those still present: sled removes
    /// a blob once its page is rewritten).
    blobs_synced: Mutex<BTreeSet<OsString>>,
}

impl SledFiles {
    pub(crate) fn open(store_dir: &Path) -> Result<SledFiles, StoreError> {
        Ok(SledFiles {
            log: File::open(store_dir.join(SLED_LOG_FILE)).map_err(io_error)?,
            blob_dir: store_dir.join(SLED_BLOB_DIR),
            blobs_synced: Mutex::new(BTreeSet::new()),
        })
    }

    /// The blob files present now (see the module's comment for why the listing comes before
    /// the flush). sled creates the directory at open; absent means no blob was ever written.
    fn list_blobs(&self) -> Result<BTreeSet<OsString>, StoreError> {
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(error) => return Err(io_error(error)),
        };
        let mut names = BTreeSet::new();
        for entry in entries {
            names.insert(entry.map_err(io_error)?.file_name());
        }
        Ok(names)
    }

    /// `fsync`s every file of `listed` not synced yet, then (if there was one) the blob
    /// directory, so their names survive too. Returns how many files it synced.
    fn sync_blobs(&self, listed: BTreeSet<OsString>) -> Result<usize, StoreError> {
        let mut synced = lock(&self.blobs_synced);
        let mut newly = 0usize;
        let mut present = BTreeSet::new();
        for name in listed {
            if !synced.contains(&name) {
                match File::open(self.blob_dir.join(&name)) {
                    Ok(file) => file.sync_all().map_err(io_error)?,
                    // Removed by sled since the listing: nothing left to make durable.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(io_error(error)),
                }
                newly = newly.saturating_add(1);
            }
            present.insert(name);
        }
        if newly > 0 {
            File::open(&self.blob_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io_error)?;
        }
        // Forget the names sled removed (a name is an LSN, never reused).
        *synced = present;
        Ok(newly)
    }
}

/// Lists sled's blob files, `Db::flush()`, then `fsync`s the listed ones not synced yet and
/// `fdatasync`s the log file, so what the flush wrote survives a power cut too (see the
/// module's comment for why the listing comes first).
pub(crate) fn flush_durably(db: &sled::Db, files: &SledFiles) -> Result<Flushed, StoreError> {
    let blobs = files.list_blobs()?;
    let log_bytes = db.flush()?;
    let blob_files = files.sync_blobs(blobs)?;
    files.log.sync_data().map_err(io_error)?;
    Ok(Flushed { log_bytes, blob_files })
}

/// What one [`flush_durably`] wrote.
pub(crate) struct Flushed {
    /// Bytes sled reported writing to its log.
    log_bytes: usize,
    /// Blob files it `fsync`ed.
    blob_files: usize,
}

/// See [`Durability::flush_once`].
pub(crate) type Settle<'a> = dyn Fn() -> Result<u64, StoreError> + 'a;

/// What the flusher publishes to waiters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Published {
    pub(crate) flushed_ticket: u64,
    /// Set once by the first failed flush and never cleared.
    pub(crate) failure: Option<Arc<str>>,
}

/// Longest a lazily requested ticket waits for a flush when nobody asks for one.
pub const LAZY_FLUSH_DELAY_MS: u64 = 5;

/// What waiters have asked the flusher for.
#[derive(Debug, Default)]
struct Requests {
    requested_ticket: u64,
    /// The highest ticket asked for lazily, and since when the oldest lazy ask not yet
    /// flushed has waited.
    lazy_ticket: u64,
    lazy_since: Option<Instant>,
    shutdown: bool,
}

/// Counters of the store, read without locks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write sets (and meta updates) applied since open.
    pub applies: u64,
    /// The ticket of the last apply.
    pub applied_ticket: u64,
    /// Every apply with a ticket up to this one is on disk.
    pub flushed_ticket: u64,
    /// Successful `Db::flush` calls since open (a flush with nothing new to write is skipped).
    pub flushes: u64,
    pub flush_micros_total: u64,
    pub flush_micros_max: u64,
    /// Bytes sled reported writing, summed over flushes.
    pub flushed_bytes_total: u64,
    /// sled blob files (log items over ~128 KiB) `fsync`ed by flushes; normally 0.
    pub blob_files_synced: u64,
}

/// The durability state shared by the store handles and the flusher thread.
#[derive(Debug)]
pub(crate) struct Durability {
    applied_ticket: AtomicU64,
    applies: AtomicU64,
    /// Mirrors `published.flushed_ticket` for lock-free reads.
    flushed_ticket: AtomicU64,
    /// The last journal sequence number written to sled (noted after the write).
    applied_journal_seq: AtomicU64,
    /// Every journal entry up to this sequence number is on disk.
    flushed_journal_seq: AtomicU64,
    failure: OnceLock<Arc<str>>,
    /// Serialises flushes: the flusher thread and `flush_blocking` callers take turns.
    flush_lock: Mutex<()>,
    requests: Mutex<Requests>,
    wake_flusher: Condvar,
    published: watch::Sender<Published>,
    flushes: AtomicU64,
    flush_micros_total: AtomicU64,
    flush_micros_max: AtomicU64,
    flushed_bytes_total: AtomicU64,
    blob_files_synced: AtomicU64,
}

/// The protected data are plain counters that are always consistent, so a panic elsewhere
/// while a lock was held leaves nothing half-done: carry on with the inner value.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Durability {
    /// `last_journal_seq`: the last journal entry found on disk at open (so, durable).
    pub(crate) fn new(last_journal_seq: u64) -> Durability {
        let (published, _receiver) = watch::channel(Published::default());
        Durability {
            applied_ticket: AtomicU64::new(0),
            applies: AtomicU64::new(0),
            flushed_ticket: AtomicU64::new(0),
            applied_journal_seq: AtomicU64::new(last_journal_seq),
            flushed_journal_seq: AtomicU64::new(last_journal_seq),
            failure: OnceLock::new(),
            flush_lock: Mutex::new(()),
            requests: Mutex::new(Requests::default()),
            wake_flusher: Condvar::new(),
            published,
            flushes: AtomicU64::new(0),
            flush_micros_total: AtomicU64::new(0),
            flush_micros_max: AtomicU64::new(0),
            flushed_bytes_total: AtomicU64::new(0),
            blob_files_synced: AtomicU64::new(0),
        }
    }

    /// Records that the apply with `ticket` is in sled (called under the writer lock, after
    /// the write, so a flush that reads this ticket afterwards covers the write).
    pub(crate) fn note_applied(&self, ticket: u64) {
        self.applied_ticket.store(ticket, Ordering::Release);
        self.applies.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that journal entries up to `seq` are in sled (called under the writer lock,
    /// after the write, like `note_applied`).
    pub(crate) fn note_journal(&self, seq: u64) {
        self.applied_journal_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Every journal entry up to this sequence number is on disk: never one that a crash or a
    /// failed flush could still take back.
    pub(crate) fn flushed_journal_seq(&self) -> u64 {
        self.flushed_journal_seq.load(Ordering::Acquire)
    }

    pub(crate) fn applied_ticket(&self) -> u64 {
        self.applied_ticket.load(Ordering::Acquire)
    }

    /// The sticky flush failure, if any flush ever failed.
    pub(crate) fn check_failure(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(failure) => Err(StoreError::Flush(failure.to_string())),
            None => Ok(()),
        }
    }

    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            applies: self.applies.load(Ordering::Relaxed),
            applied_ticket: self.applied_ticket.load(Ordering::Acquire),
            flushed_ticket: self.flushed_ticket.load(Ordering::Acquire),
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_micros_total: self.flush_micros_total.load(Ordering::Relaxed),
            flush_micros_max: self.flush_micros_max.load(Ordering::Relaxed),
            flushed_bytes_total: self.flushed_bytes_total.load(Ordering::Relaxed),
            blob_files_synced: self.blob_files_synced.load(Ordering::Relaxed),
        }
    }

    /// Flushes everything applied so far, unless an earlier flush already covered it.
    /// Used by the flusher thread and by `flush_blocking`; one at a time. `settle` writes to
    /// sled what the store still holds in memory (audit records) and returns the applied
    /// ticket as of then, read under the writer lock: every ticket up to it is in sled.
    pub(crate) fn flush_once(&self, db: &sled::Db, files: &SledFiles, settle: &Settle<'_>) -> Result<(), StoreError> {
        let _turn = lock(&self.flush_lock);
        self.check_failure()?;
        // Read under the flush lock: every apply that returned before this point is covered.
        let target = match settle() {
            Ok(target) => target,
            Err(error) => return Err(self.fail(format!("before a flush: {error}"))),
        };
        if target <= self.flushed_ticket.load(Ordering::Acquire) {
            return Ok(());
        }
        // Read before the flush: every entry noted by now was written to sled before this read,
        // so the flush below covers it.
        let journal_target = self.applied_journal_seq.load(Ordering::Acquire);
        let started = Instant::now();
        match flush_durably(db, files) {
            Ok(flushed) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.flush_micros_total.fetch_add(micros, Ordering::Relaxed);
                self.flush_micros_max.fetch_max(micros, Ordering::Relaxed);
                self.flushed_bytes_total
                    .fetch_add(u64::try_from(flushed.log_bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
                self.blob_files_synced
                    .fetch_add(u64::try_from(flushed.blob_files).unwrap_or(u64::MAX), Ordering::Relaxed);
                self.flushed_ticket.store(target, Ordering::Release);
                self.flushed_journal_seq.fetch_max(journal_target, Ordering::AcqRel);
                self.published
                    .send_modify(|published| published.flushed_ticket = target);
                Ok(())
            }
            Err(error) => Err(self.fail(format!("sled flush: {error}"))),
        }
    }

    /// Makes `reason` the sticky failure (the first one wins) and tells every waiter.
    pub(crate) fn fail(&self, reason: String) -> StoreError {
        let failure = self.failure.get_or_init(|| Arc::from(reason)).clone();
        self.published.send_modify(|published| {
            if published.failure.is_none() {
                published.failure = Some(failure.clone());
            }
        });
        StoreError::Flush(failure.to_string())
    }

    /// Waits until `ticket` is flushed, asking the flusher for it if needed.
    pub(crate) async fn wait_durable(&self, ticket: u64) -> Result<(), StoreError> {
        self.wait_durable_as(ticket, false).await
    }

    /// Waits until `ticket` is flushed, by the next flush anyone asks for or, at the latest,
    /// one `LAZY_FLUSH_DELAY_MS` after this ask.
    pub(crate) async fn wait_durable_lazily(&self, ticket: u64) -> Result<(), StoreError> {
        self.wait_durable_as(ticket, true).await
    }

    async fn wait_durable_as(&self, ticket: u64, lazy: bool) -> Result<(), StoreError> {
        let applied = self.applied_ticket();
        if ticket > applied {
            return Err(StoreError::TicketNotApplied { ticket, applied });
        }
        self.check_failure()?;
        // Subscribe before asking, so the publication that answers us cannot be missed.
        let mut receiver = self.published.subscribe();
        if receiver.borrow_and_update().flushed_ticket >= ticket {
            return Ok(());
        }
        if lazy {
            self.request_lazily(ticket);
        } else {
            self.request(ticket);
        }
        let failure = {
            let published = receiver
                .wait_for(|published| published.failure.is_some() || published.flushed_ticket >= ticket)
                .await
                .map_err(|_| StoreError::Flush("the flusher is gone".to_string()))?;
            published.failure.clone()
        };
        // A failure wins even if our ticket made it: after a failed flush the node must stop
        // acknowledging, whatever it is.
        match failure {
            Some(failure) => Err(StoreError::Flush(failure.to_string())),
            None => Ok(()),
        }
    }

    fn request(&self, ticket: u64) {
        let mut requests = lock(&self.requests);
        if ticket > requests.requested_ticket {
            requests.requested_ticket = ticket;
            self.wake_flusher.notify_one();
        }
    }

    fn request_lazily(&self, ticket: u64) {
        let mut requests = lock(&self.requests);
        requests.lazy_ticket = requests.lazy_ticket.max(ticket);
        if requests.lazy_since.is_none() {
            // Only the first lazy ask wakes the flusher (to start its clock); later ones
            // share that deadline and cost no wake-up.
            requests.lazy_since = Some(Instant::now());
            self.wake_flusher.notify_one();
        }
    }

    /// Takes the flush turn, so no flush can start until the guard is dropped.
    #[cfg(test)]
    pub(crate) fn hold_flush_turn_for_tests(&self) -> MutexGuard<'_, ()> {
        lock(&self.flush_lock)
    }

    pub(crate) fn shut_down(&self) {
        lock(&self.requests).shutdown = true;
        self.wake_flusher.notify_all();
    }

    /// The flusher thread's loop; returns at shutdown.
    pub(crate) fn run_flusher(&self, db: &sled::Db, files: &SledFiles, settle: &Settle<'_>) {
        loop {
            {
                let mut requests = lock(&self.requests);
                loop {
                    if requests.shutdown {
                        return;
                    }
                    // After a failure there is nothing to do: waiters already got the error.
                    if self.failure.get().is_some() {
                        requests = self.wake_flusher.wait(requests).unwrap_or_else(PoisonError::into_inner);
                        continue;
                    }
                    let flushed = self.flushed_ticket.load(Ordering::Acquire);
                    if requests.requested_ticket > flushed {
                        break;
                    }
                    match requests.lazy_since {
                        Some(since) if requests.lazy_ticket > flushed => {
                            let due = since + Duration::from_millis(LAZY_FLUSH_DELAY_MS);
                            let now = Instant::now();
                            if now >= due {
                                break;
                            }
                            requests = self
                                .wake_flusher
                                .wait_timeout(requests, due - now)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        _ => {
                            requests.lazy_since = None;
                            requests = self.wake_flusher.wait(requests).unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                }
            }
            // The error is not lost: `flush_once` made it sticky and published it to every
            // waiter, present and future.
            let _ = self.flush_once(db, files, settle);
            let mut requests = lock(&self.requests);
            if requests.lazy_ticket <= self.flushed_ticket.load(Ordering::Acquire) {
                requests.lazy_since = None;
            } else if requests.lazy_since.is_some() {
                // Asked lazily while this flush ran: a new delay from now.
                requests.lazy_since = Some(Instant::now());
            }
        }
    }
}
