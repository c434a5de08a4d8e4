//! Bulk bureau operations from CSV files: `exchange ctl import accounts|bindings FILE.csv` and
//! `exchange ctl credit-batch FILE.csv` (see `docs/operations.md` for the file formats).
//!
//! The file is read row by row (never held in memory) and at most `--concurrency` requests are
//! in flight at once. Every row that cannot be imported — malformed here, or refused by the
//! node — is written to the report CSV with its line number, key, reason code and message; a
//! bad row never stops the import. Re-running a file is safe: what the node already has counts
//! as "already present" (`account_exists`, `duplicate_binding`, a credit id applied with the
//! same person and amount).
//!
//! The parsing is pure ([`RowReader`], [`parse_row`]) and unit-tested without a node.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufReader, IsTerminal as _, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use csv::{ByteRecord, StringRecord};
use exchange_core::binding::{BindRequest, DocumentKind, Evidence};
use exchange_core::message::{ClientReply, ClientRequest};
use exchange_core::money::MoneyError;
use exchange_core::{BindingKind, CreditId, ErrorKind, Limits, Money, PersonId, Province, Relation, Scheme};
use exchange_node::client::BureauConn;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tonic::Code;

use crate::Failure;

/// The evidence reference recorded when a bindings file leaves `evidence_ref` empty (the same
/// default as `exchange ctl bind`).
pub const DEFAULT_EVIDENCE_REF: &str = "recorded-at-counter";

/// Bindings are sent one at a time for now: the node allocates binding ids from one counter
/// read by each account shard separately, so two binds of grantors on different shards in
/// flight together can get the same id and one binding overwrites the other (seen in
/// `tests/import.rs`; to be fixed in the node, then this limit can go).
const BINDINGS_IN_FLIGHT_MAX: u16 = 1;

/// How many times a request is sent while the node answers "busy" or "unavailable".
const SEND_ATTEMPTS: u32 = 8;

/// `exchange ctl import ...`: what is imported.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Open accounts from CSV: person,name,scheme,balance_yuan (scheme employee|resident;
    /// balance empty means 0).
    Accounts(FileArgs),
    /// Bind grantors of this node from CSV: grantor,grantee,grantee_province,relation,kind,
    /// limit_per_settlement_yuan,limit_monthly_yuan,document,evidence_ref,under_16.
    Bindings(FileArgs),
}

/// The file and how to import it.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The CSV file, with a header line naming the columns (see docs/operations.md).
    pub file: PathBuf,
    /// Where to write the rows that were not imported (default: FILE with `.report.csv`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,
}

/// The three kinds of file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Accounts,
    Bindings,
    Credits,
}

impl Kind {
    /// The columns of the header, in the order the bureau's system exports them.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::Accounts => &["person", "name", "scheme", "balance_yuan"],
            Kind::Bindings => &[
                "grantor",
                "grantee",
                "grantee_province",
                "relation",
                "kind",
                "limit_per_settlement_yuan",
                "limit_monthly_yuan",
                "document",
                "evidence_ref",
                "under_16",
            ],
            Kind::Credits => &["credit_id", "person", "amount_yuan"],
        }
    }
}

/// Why the file as a whole cannot be imported (exit code 2).
#[derive(Debug, PartialEq, Eq)]
pub enum FileError {
    /// No header line at all.
    Empty,
    /// The first line is not the expected header (or not text).
    BadHeader(String),
    /// Reading failed (IO error, or the CSV reader could not make progress).
    Read(String),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Empty => write!(f, "the file is empty; it must start with a header line"),
            FileError::BadHeader(message) => write!(f, "{message}"),
            FileError::Read(message) => write!(f, "cannot read the file: {message}"),
        }
    }
}

/// Why one row is malformed: a stable reason code and a message naming the column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub code: &'static str,
    pub message: String,
}

impl RowError {
    fn new(code: &'static str, message: impl Into<String>) -> RowError {
        RowError {
            code,
            message: message.into(),
        }
    }
}

/// One data row read from the file: its line number, its key (as written) and the request it
/// becomes, or why it is malformed.
#[derive(Debug)]
pub struct Parsed {
    pub line: u64,
    pub key: String,
    pub result: Result<ClientRequest, RowError>,
}

#[derive(Debug, Deserialize)]
struct AccountRow {
    person: String,
    name: String,
    scheme: String,
    balance_yuan: String,
}

#[derive(Debug, Deserialize)]
struct BindingRow {
    grantor: String,
    grantee: String,
    grantee_province: String,
    relation: String,
    kind: String,
    limit_per_settlement_yuan: String,
    limit_monthly_yuan: String,
    document: String,
    evidence_ref: String,
    under_16: String,
}

#[derive(Debug, Deserialize)]
struct CreditRow {
    credit_id: String,
    person: String,
    amount_yuan: String,
}

fn person(column: &str, text: &str) -> Result<PersonId, RowError> {
    PersonId::parse(text).map_err(|error| RowError::new("bad_resident_id", format!("{column}: {error}")))
}

fn money(column: &str, text: &str) -> Result<Money, RowError> {
    Money::parse_yuan(text).map_err(|error| {
        let code = match error {
            MoneyError::Negative(_) => "negative_amount",
            MoneyError::TooManyDecimals(_) => "too_many_decimals",
            _ => "bad_amount",
        };
        RowError::new(code, format!("{column}: {error}"))
    })
}

fn optional_money(column: &str, text: &str) -> Result<Option<Money>, RowError> {
    if text.is_empty() {
        Ok(None)
    } else {
        money(column, text).map(Some)
    }
}

fn flag(column: &str, text: &str) -> Result<bool, RowError> {
    match text.to_ascii_lowercase().as_str() {
        "" | "false" | "no" | "n" | "0" => Ok(false),
        "true" | "yes" | "y" | "1" => Ok(true),
        _ => Err(RowError::new(
            "bad_flag",
            format!("{column}: {text:?} is not true/false (yes/no, 1/0; empty means false)"),
        )),
    }
}

/// The key of a row as written in the file, for the report: the person for accounts,
/// `grantor/grantee/kind` for bindings, the credit id for credits.
pub fn row_key(kind: Kind, headers: &StringRecord, record: &StringRecord) -> String {
    let field = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .and_then(|index| record.get(index))
            .unwrap_or("")
    };
    match kind {
        Kind::Accounts => field("person").to_string(),
        Kind::Bindings => format!("{}/{}/{}", field("grantor"), field("grantee"), field("kind")),
        Kind::Credits => field("credit_id").to_string(),
    }
}

/// Turns one data row into the request to send, or says why it is malformed. `headers` is the
/// checked header (from [`check_header`]); `home` is this node's province (the default
/// `grantee_province` of a binding).
pub fn parse_row(
    kind: Kind,
    headers: &StringRecord,
    record: &StringRecord,
    home: Province,
) -> Result<ClientRequest, RowError> {
    if record.len() < headers.len() {
        let missing: Vec<&str> = headers.iter().skip(record.len()).collect();
        return Err(RowError::new(
            "missing_columns",
            format!(
                "the row has {} columns, the header {}; missing: {}",
                record.len(),
                headers.len(),
                missing.join(", ")
            ),
        ));
    }
    if record.len() > headers.len() {
        return Err(RowError::new(
            "too_many_columns",
            format!(
                "the row has {} columns, the header only {} (an unquoted comma in a name?)",
                record.len(),
                headers.len()
            ),
        ));
    }
    let malformed = |error: csv::Error| RowError::new("malformed_row", format!("cannot read the row: {error}"));
    match kind {
        Kind::Accounts => {
            let row: AccountRow = record.deserialize(Some(headers)).map_err(malformed)?;
            let person = person("person", &row.person)?;
            let scheme: Scheme = row
                .scheme
                .parse()
                .map_err(|error: String| RowError::new("unknown_scheme", format!("scheme: {error}")))?;
            let balance = optional_money("balance_yuan", &row.balance_yuan)?.unwrap_or(Money::ZERO);
            Ok(ClientRequest::OpenAccount {
                person,
                name: row.name,
                scheme,
                balance,
            })
        }
        Kind::Bindings => {
            let row: BindingRow = record.deserialize(Some(headers)).map_err(malformed)?;
            let grantor = person("grantor", &row.grantor)?;
            let grantee = person("grantee", &row.grantee)?;
            let grantee_province = if row.grantee_province.is_empty() {
                home
            } else {
                row.grantee_province
                    .parse::<Province>()
                    .map_err(|error| RowError::new("bad_province", format!("grantee_province: {error}")))?
            };
            let relation: Relation = row
                .relation
                .parse()
                .map_err(|error: String| RowError::new("unknown_relation", format!("relation: {error}")))?;
            let binding_kind: BindingKind = row
                .kind
                .parse()
                .map_err(|error: String| RowError::new("unknown_kind", format!("kind: {error}")))?;
            let per_settlement = optional_money("limit_per_settlement_yuan", &row.limit_per_settlement_yuan)?;
            let monthly = optional_money("limit_monthly_yuan", &row.limit_monthly_yuan)?;
            let document = if row.document.is_empty() {
                DocumentKind::HouseholdRegister
            } else {
                row.document
                    .parse()
                    .map_err(|error: String| RowError::new("unknown_document", format!("document: {error}")))?
            };
            let under_16 = flag("under_16", &row.under_16)?;
            let reference = if row.evidence_ref.is_empty() {
                DEFAULT_EVIDENCE_REF.to_string()
            } else {
                row.evidence_ref
            };
            Ok(ClientRequest::Bind(BindRequest {
                grantor,
                grantee,
                grantee_province,
                relation,
                kind: binding_kind,
                limits: Limits {
                    per_settlement,
                    monthly,
                },
                evidence: Evidence {
                    document,
                    reference,
                    face_verified: !under_16,
                    commitment_signed: true,
                },
            }))
        }
        Kind::Credits => {
            let row: CreditRow = record.deserialize(Some(headers)).map_err(malformed)?;
            let credit = CreditId::new(row.credit_id)
                .map_err(|error| RowError::new("bad_credit_id", format!("credit_id: {error}")))?;
            let person = person("person", &row.person)?;
            let amount = money("amount_yuan", &row.amount_yuan)?;
            Ok(ClientRequest::Credit { credit, person, amount })
        }
    }
}

/// Checks a header line: exactly the columns of `kind`, each once, in any order (names are
/// trimmed; a UTF-8 byte-order mark is ignored). Returns the cleaned header.
pub fn check_header(kind: Kind, header: &ByteRecord) -> Result<StringRecord, FileError> {
    let expected = kind.columns();
    let wanted = || {
        format!(
            "{} file starts with the header line `{}` (columns in any order)",
            match kind {
                Kind::Accounts => "an accounts",
                Kind::Bindings => "a bindings",
                Kind::Credits => "a credits",
            },
            expected.join(",")
        )
    };
    let header = StringRecord::from_byte_record(header.clone()).map_err(|_| {
        FileError::BadHeader(format!(
            "the first line is not UTF-8 text, so this is not a CSV export; {}",
            wanted()
        ))
    })?;
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let name = if index == 0 {
                name.trim_start_matches('\u{feff}')
            } else {
                name
            };
            name.trim().to_string()
        })
        .collect();
    let shown = || {
        let mut text: String = names.join(",").chars().take(120).collect();
        if text.len() < names.join(",").len() {
            text.push('…');
        }
        text
    };
    let unknown: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| !expected.contains(name))
        .collect();
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|column| !names.iter().any(|name| name == column))
        .collect();
    let repeated: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|column| names.iter().filter(|name| name == column).count() > 1)
        .collect();
    if !unknown.is_empty() || !missing.is_empty() || !repeated.is_empty() {
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("missing {}", missing.join(", ")));
        }
        if !unknown.is_empty() {
            let unknown: Vec<String> = unknown.iter().take(5).map(|name| format!("{name:?}")).collect();
            problems.push(format!("unknown {}", unknown.join(", ")));
        }
        if !repeated.is_empty() {
            problems.push(format!("repeated {}", repeated.join(", ")));
        }
        return Err(FileError::BadHeader(format!(
            "the header `{}` is wrong ({}); {}",
            shown(),
            problems.join("; "),
            wanted()
        )));
    }
    Ok(StringRecord::from(names))
}

/// The bytes the CSV reader has taken from the file but the line count has not passed yet:
/// enough to find the line a record starts on (the `csv` crate's own line numbers count
/// skipped blank lines and CRLF endings into the following record).
#[derive(Debug, Default)]
struct LineWindow {
    /// File offset of `bytes[0]`.
    base: u64,
    /// Newlines before `base`.
    newlines: u64,
    bytes: VecDeque<u8>,
}

impl LineWindow {
    /// The 1-based line of the first byte at or after `offset` that is not a line ending,
    /// forgetting everything before `offset`.
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.base < offset {
            match self.bytes.pop_front() {
                Some(byte) => {
                    self.base += 1;
                    if byte == b'\n' {
                        self.newlines += 1;
                    }
                }
                None => break,
            }
        }
        let skipped = self
            .bytes
            .iter()
            .take_while(|byte| matches!(byte, b'\r' | b'\n'))
            .filter(|byte| **byte == b'\n')
            .count();
        self.newlines
            .saturating_add(u64::try_from(skipped).unwrap_or(u64::MAX))
            .saturating_add(1)
    }
}

/// Passes the file's bytes to the CSV reader and keeps them in the [`LineWindow`].
#[derive(Debug)]
struct Tee<R> {
    inner: R,
    window: Arc<std::sync::Mutex<LineWindow>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let (Ok(mut window), Some(read)) = (self.window.lock(), buf.get(..n)) {
            window.bytes.extend(read);
        }
        Ok(n)
    }
}

/// Reads a CSV file row by row: checks the header, then yields each data row parsed, with
/// the line it starts on (the header is line 1 unless blank lines precede it).
#[derive(Debug)]
pub struct RowReader<R> {
    kind: Kind,
    home: Province,
    reader: csv::Reader<Tee<R>>,
    lines: Arc<std::sync::Mutex<LineWindow>>,
    headers: StringRecord,
    record: ByteRecord,
}

impl<R: Read> RowReader<R> {
    /// Reads and checks the header line.
    pub fn new(kind: Kind, home: Province, input: R) -> Result<RowReader<R>, FileError> {
        let lines = Arc::new(std::sync::Mutex::new(LineWindow::default()));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(Tee {
                inner: input,
                window: lines.clone(),
            });
        let mut header = ByteRecord::new();
        match reader.read_byte_record(&mut header) {
            Ok(true) => {}
            Ok(false) => return Err(FileError::Empty),
            Err(error) => return Err(FileError::Read(error.to_string())),
        }
        let headers = check_header(kind, &header)?;
        Ok(RowReader {
            kind,
            home,
            reader,
            lines,
            headers,
            record: ByteRecord::new(),
        })
    }

    /// Bytes of the file consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }

    /// The next data row, `None` at the end of the file, or an error that stops the reading
    /// (the file cannot be read).
    pub fn next_row(&mut self) -> Option<Result<Parsed, FileError>> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Err(error) => Some(Err(FileError::Read(error.to_string()))),
            Ok(true) => {
                let start = self.record.position().map(csv::Position::byte).unwrap_or(0);
                let line = match self.lines.lock() {
                    Ok(mut window) => window.line_at(start),
                    Err(_) => 0,
                };
                Some(Ok(match StringRecord::from_byte_record(self.record.clone()) {
                    Ok(record) => Parsed {
                        line,
                        key: row_key(self.kind, &self.headers, &record),
                        result: parse_row(self.kind, &self.headers, &record, self.home),
                    },
                    Err(error) => {
                        let lossy: Vec<String> = self
                            .record
                            .iter()
                            .map(|field| String::from_utf8_lossy(field).into_owned())
                            .collect();
                        Parsed {
                            line,
                            key: row_key(self.kind, &self.headers, &StringRecord::from(lossy)),
                            result: Err(RowError::new(
                                "not_utf8",
                                format!("the row is not UTF-8 text: {}", error.utf8_error()),
                            )),
                        }
                    }
                }))
            }
        }
    }
}

/// What became of one row.
#[derive(Debug)]
enum Outcome {
    Imported {
        credited_fen: u64,
    },
    AlreadyPresent,
    Refused {
        reason: String,
        message: String,
        malformed: bool,
    },
    /// The node did not answer (after retries): the import stops.
    Unreachable(String),
}

/// Classifies the node's reply to one row's request.
fn classify(kind: Kind, reply: ClientReply) -> Outcome {
    match (kind, reply) {
        (Kind::Accounts, ClientReply::Account(_)) | (Kind::Bindings, ClientReply::Bound { .. }) => {
            Outcome::Imported { credited_fen: 0 }
        }
        (Kind::Credits, ClientReply::Credited { duplicate: true, .. }) => Outcome::AlreadyPresent,
        (Kind::Credits, ClientReply::Credited { .. }) => Outcome::Imported { credited_fen: 0 },
        (Kind::Accounts, ClientReply::Error(error)) if error.reason == "account_exists" => Outcome::AlreadyPresent,
        (Kind::Bindings, ClientReply::Error(error)) if error.reason == "duplicate_binding" => Outcome::AlreadyPresent,
        (_, ClientReply::Error(error)) => Outcome::Refused {
            reason: error.reason,
            message: error.message,
            malformed: false,
        },
        (_, other) => Outcome::Refused {
            reason: "unexpected_reply".into(),
            message: format!("the node answered with an unexpected reply: {other:?}"),
            malformed: false,
        },
    }
}

/// Sends one request, retrying while the node is busy or briefly unavailable (every request
/// of an import is idempotent: re-sending it cannot apply it twice).
async fn send(conn: &mut BureauConn, kind: Kind, request: ClientRequest) -> Outcome {
    let credited_fen = match &request {
        ClientRequest::Credit { amount, .. } => amount.fen(),
        _ => 0,
    };
    let mut delay = Duration::from_millis(50);
    let mut last = String::new();
    for _ in 0..SEND_ATTEMPTS {
        match conn.call(request.clone()).await {
            Ok(ClientReply::Error(error)) if error.kind == ErrorKind::ResourceExhausted => {
                last = format!("{} ({})", error.message, error.reason);
            }
            Ok(reply) => {
                return match classify(kind, reply) {
                    Outcome::Imported { .. } => Outcome::Imported { credited_fen },
                    other => other,
                };
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::ResourceExhausted | Code::Unavailable | Code::DeadlineExceeded
                ) =>
            {
                last = status.message().to_string();
            }
            Err(status) => return Outcome::Unreachable(format!("{:?}: {}", status.code(), status.message())),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    Outcome::Unreachable(last)
}

/// The counts printed at the end (and with `--json`).
#[derive(Debug, Default, Serialize)]
struct Summary {
    kind: Option<Kind>,
    file: String,
    report: String,
    rows: u64,
    imported: u64,
    already_present: u64,
    refused: u64,
    /// Of `refused`: rows malformed in the file (never sent).
    malformed: u64,
    /// Rows read but not finished because the import stopped (the node stopped answering).
    unfinished: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    credited_fen: Option<u64>,
    seconds: f64,
    rows_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
}

#[derive(Debug)]
enum Slot {
    Done {
        line: u64,
        key: String,
        outcome: Outcome,
    },
    Pending {
        line: u64,
        key: String,
        /// Rows with the same order key are sent one after the other, in file order.
        order: String,
        handle: JoinHandle<Outcome>,
    },
}

impl Slot {
    fn is_ready(&self) -> bool {
        match self {
            Slot::Done { .. } => true,
            Slot::Pending { handle, .. } => handle.is_finished(),
        }
    }

    async fn finish(self) -> (u64, String, Outcome) {
        match self {
            Slot::Done { line, key, outcome } => (line, key, outcome),
            Slot::Pending { line, key, handle, .. } => {
                let outcome = handle
                    .await
                    .unwrap_or_else(|error| Outcome::Unreachable(format!("the request task failed: {error}")));
                (line, key, outcome)
            }
        }
    }
}

/// What must not be in flight twice: a person's account, a grantor's bindings (so the policy's
/// limits refuse the same rows on every run), a credit id (so the first row of the file wins).
fn order_key(request: &ClientRequest) -> String {
    match request {
        ClientRequest::OpenAccount { person, .. } => person.to_string(),
        ClientRequest::Bind(bind) => bind.grantor.to_string(),
        ClientRequest::Credit { credit, .. } => credit.to_string(),
        _ => String::new(),
    }
}

/// Takes the oldest row out of the window and records its outcome (waiting for it if needed).
async fn retire(
    window: &mut VecDeque<Slot>,
    busy: &mut HashMap<String, u32>,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let Some(slot) = window.pop_front() else {
        return Ok(());
    };
    if let Slot::Pending { order, .. } = &slot
        && let Some(count) = busy.get_mut(order)
    {
        *count = count.saturating_sub(1);
        if *count == 0 {
            busy.remove(order);
        }
    }
    let (line, key, outcome) = slot.finish().await;
    tally.record(line, &key, outcome)
}

#[derive(Debug)]
struct Tally {
    summary: Summary,
    report: csv::Writer<std::io::BufWriter<File>>,
}

impl Tally {
    fn record(&mut self, line: u64, key: &str, outcome: Outcome) -> Result<(), Failure> {
        match outcome {
            Outcome::Imported { credited_fen } => {
                self.summary.imported += 1;
                if let Some(total) = self.summary.credited_fen.as_mut() {
                    *total = total.saturating_add(credited_fen);
                }
            }
            Outcome::AlreadyPresent => self.summary.already_present += 1,
            Outcome::Refused {
                reason,
                message,
                malformed,
            } => {
                self.summary.refused += 1;
                if malformed {
                    self.summary.malformed += 1;
                }
                self.report
                    .write_record([line.to_string().as_str(), key, reason.as_str(), message.as_str()])
                    .map_err(|error| Failure::Input(anyhow!("writing the report {}: {error}", self.summary.report)))?;
            }
            Outcome::Unreachable(message) => {
                self.summary.unfinished += 1;
                if self.summary.stopped.is_none() {
                    self.summary.stopped = Some(format!("the node stopped answering: {message}"));
                }
            }
        }
        Ok(())
    }
}

/// The default report path: `accounts.csv` -> `accounts.report.csv`.
pub fn default_report_path(file: &Path) -> PathBuf {
    file.with_extension("report.csv")
}

fn progress_bar(bytes: u64, json_out: bool) -> ProgressBar {
    if json_out || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `exchange ctl import accounts|bindings FILE`.
pub async fn run_import(
    conn: BureauConn,
    province: Province,
    command: ImportCommand,
    json_out: bool,
) -> Result<(), Failure> {
    match command {
        ImportCommand::Accounts(args) => run_file(conn, province, Kind::Accounts, args, json_out).await,
        ImportCommand::Bindings(args) => run_file(conn, province, Kind::Bindings, args, json_out).await,
    }
}

/// `exchange ctl credit-batch FILE`.
pub async fn run_credits(conn: BureauConn, province: Province, args: FileArgs, json_out: bool) -> Result<(), Failure> {
    run_file(conn, province, Kind::Credits, args, json_out).await
}

async fn run_file(
    conn: BureauConn,
    province: Province,
    kind: Kind,
    args: FileArgs,
    json_out: bool,
) -> Result<(), Failure> {
    let path = args.file.display().to_string();
    let file = File::open(&args.file).map_err(|error| Failure::Input(anyhow!("cannot open {path}: {error}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut rows = RowReader::new(kind, province, BufReader::with_capacity(1 << 20, file))
        .map_err(|error| Failure::Input(anyhow!("{path}: {error}")))?;
    let report_path = args.report.unwrap_or_else(|| default_report_path(&args.file));
    let report_file = File::create(&report_path)
        .map_err(|error| Failure::Input(anyhow!("cannot create the report {}: {error}", report_path.display())))?;
    let mut report = csv::Writer::from_writer(std::io::BufWriter::new(report_file));
    report
        .write_record(["line", "key", "reason", "message"])
        .map_err(|error| Failure::Input(anyhow!("writing the report {}: {error}", report_path.display())))?;
    let mut tally = Tally {
        summary: Summary {
            kind: Some(kind),
            file: path.clone(),
            report: report_path.display().to_string(),
            credited_fen: (kind == Kind::Credits).then_some(0),
            ..Summary::default()
        },
        report,
    };

    let started = Instant::now();
    let bar = progress_bar(size, json_out);
    let concurrency = usize::from(match kind {
        Kind::Bindings => args.concurrency.min(BINDINGS_IN_FLIGHT_MAX),
        Kind::Accounts | Kind::Credits => args.concurrency,
    });
    let permits = Arc::new(Semaphore::new(concurrency));
    // Outcomes are reported in file order; finished rows wait here behind a slower earlier one.
    let window_max = concurrency.saturating_mul(4).max(64);
    let mut window: VecDeque<Slot> = VecDeque::with_capacity(window_max);
    let mut busy: HashMap<String, u32> = HashMap::new();
    let mut read_error = None;

    while tally.summary.stopped.is_none() {
        let parsed = match rows.next_row() {
            None => break,
            Some(Ok(parsed)) => parsed,
            Some(Err(error)) => {
                read_error = Some(error);
                break;
            }
        };
        tally.summary.rows += 1;
        let slot = match parsed.result {
            Err(error) => Slot::Done {
                line: parsed.line,
                key: parsed.key,
                outcome: Outcome::Refused {
                    reason: error.code.to_string(),
                    message: error.message,
                    malformed: true,
                },
            },
            Ok(request) => {
                let order = order_key(&request);
                while busy.contains_key(&order) && !window.is_empty() {
                    retire(&mut window, &mut busy, &mut tally).await?;
                }
                *busy.entry(order.clone()).or_insert(0) += 1;
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|error| Failure::Input(anyhow!("internal: {error}")))?;
                let mut conn = conn.clone();
                let handle = tokio::spawn(async move {
                    let outcome = send(&mut conn, kind, request).await;
                    drop(permit);
                    outcome
                });
                Slot::Pending {
                    line: parsed.line,
                    key: parsed.key,
                    order,
                    handle,
                }
            }
        };
        window.push_back(slot);
        while window
            .front()
            .is_some_and(|front| front.is_ready() || window.len() >= window_max)
        {
            retire(&mut window, &mut busy, &mut tally).await?;
        }
        if tally.summary.rows % 64 == 0 {
            bar.set_position(rows.bytes_read());
            bar.set_message(format!(
                "{} rows, {} refused",
                tally.summary.rows, tally.summary.refused
            ));
            // Let the request tasks run (the runtime may have one thread).
            tokio::task::yield_now().await;
        }
    }
    while !window.is_empty() {
        retire(&mut window, &mut busy, &mut tally).await?;
    }
    bar.set_position(rows.bytes_read());
    bar.finish_and_clear();
    tally
        .report
        .flush()
        .map_err(|error| Failure::Input(anyhow!("writing the report {}: {error}", tally.summary.report)))?;

    let summary = &mut tally.summary;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.rows_per_second = if summary.seconds > 0.0 {
        (summary.rows as f64 / summary.seconds).round()
    } else {
        0.0
    };
    if json_out {
        println!("{}", serde_json::to_value(&*summary).unwrap_or(serde_json::Value::Null));
    } else {
        let mut line = format!(
            "{}: {} rows: {} imported, {} already present, {} refused ({} malformed)",
            summary.file, summary.rows, summary.imported, summary.already_present, summary.refused, summary.malformed
        );
        if let Some(fen) = summary.credited_fen
            && let Ok(amount) = Money::from_fen(fen)
        {
            line.push_str(&format!(", {amount} yuan credited"));
        }
        if summary.unfinished > 0 {
            line.push_str(&format!(", {} unfinished", summary.unfinished));
        }
        println!(
            "{line}; {:.1} s, {} rows/s; report {}",
            summary.seconds, summary.rows_per_second, summary.report
        );
    }
    if let Some(error) = read_error {
        return Err(Failure::Input(anyhow!(
            "{path}: {error}; the rows before were processed, re-running the file is safe"
        )));
    }
    if let Some(stopped) = &summary.stopped {
        return Err(Failure::Input(anyhow!(
            "{stopped}; the import stopped after {} rows, re-running the same file is safe",
            summary.rows
        )));
    }
    if summary.refused > 0 {
        return Err(Failure::Check(anyhow!(
            "{} of {} rows were not imported; see the report {}",
            summary.refused,
            summary.rows,
            summary.report
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHONGQING: u32 = 500000;

    fn home() -> Province {
        Province::from_code(CHONGQING).unwrap_or_else(|_| unreachable!())
    }

    fn id(code: u32, sequence: u32) -> String {
        PersonId::from_body(&format!("{code:06}19700101{sequence:03}"))
            .map(|p| p.to_string())
            .unwrap_or_default()
    }

    /// Reads a whole file's text: the header error, or each row's result.
    fn read(kind: Kind, text: &str) -> Result<Vec<Parsed>, FileError> {
        let mut reader = RowReader::new(kind, home(), text.as_bytes())?;
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row() {
            rows.push(row?);
        }
        Ok(rows)
    }

    fn one(kind: Kind, row: &str) -> Result<ClientRequest, RowError> {
        let header = kind.columns().join(",");
        let mut rows = read(kind, &format!("{header}\n{row}\n")).map_err(|e| RowError::new("file", e.to_string()))?;
        assert_eq!(rows.len(), 1);
        rows.remove(0).result
    }

    fn code(kind: Kind, row: &str) -> &'static str {
        match one(kind, row) {
            Ok(request) => panic!("expected a malformed row, got {request:?}"),
            Err(error) => error.code,
        }
    }

    #[test]
    fn a_good_account_row_becomes_open_account() {
        let person = id(CHONGQING, 1);
        let request = one(Kind::Accounts, &format!("{person},\"Li, Hua\",employee,1200.50"));
        assert_eq!(
            request,
            Ok(ClientRequest::OpenAccount {
                person: PersonId::parse(&person).unwrap_or_else(|_| unreachable!()),
                name: "Li, Hua".into(),
                scheme: Scheme::Employee,
                balance: Money::from_fen(120_050).unwrap_or_default(),
            })
        );
        // Empty balance means zero; columns in another order are fine.
        let rows = read(
            Kind::Accounts,
            &format!("\u{feff}scheme, person ,balance_yuan,name\nresident,{person},,Wang\n"),
        );
        let rows = rows.unwrap_or_default();
        assert!(matches!(
            &rows[0].result,
            Ok(ClientRequest::OpenAccount { scheme: Scheme::Resident, balance, name, .. }) if balance.is_zero() && name == "Wang"
        ));
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].key, person);
    }

    #[test]
    fn a_bad_resident_id_is_reported_with_the_core_message() {
        let mut bad = id(CHONGQING, 1);
        let last = if bad.ends_with('0') { "1" } else { "0" };
        bad.replace_range(17..18, last);
        let error = one(Kind::Accounts, &format!("{bad},Li,employee,1"))
            .err()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(error.code, "bad_resident_id");
        let core = PersonId::parse(&bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(error.message, format!("person: {core}"));
        assert_eq!(code(Kind::Accounts, "12345,Li,employee,1"), "bad_resident_id");
        assert_eq!(code(Kind::Accounts, ",Li,employee,1"), "bad_resident_id");
    }

    #[test]
    fn amounts_with_three_decimals_negative_or_not_numbers_are_refused() {
        let person = id(CHONGQING, 2);
        assert_eq!(
            code(Kind::Accounts, &format!("{person},Li,employee,1.005")),
            "too_many_decimals"
        );
        assert_eq!(
            code(Kind::Accounts, &format!("{person},Li,employee,-5")),
            "negative_amount"
        );
        assert_eq!(code(Kind::Accounts, &format!("{person},Li,employee,1e3")), "bad_amount");
        assert_eq!(
            code(Kind::Accounts, &format!("{person},Li,employee,\"1,000\"")),
            "bad_amount"
        );
        assert_eq!(code(Kind::Credits, &format!("C-1,{person},")), "bad_amount");
        assert_eq!(code(Kind::Credits, &format!("C-1,{person},0.001")), "too_many_decimals");
        assert_eq!(code(Kind::Credits, &format!("C-1,{person},-0.01")), "negative_amount");
        let grantee = id(CHONGQING, 3);
        assert_eq!(
            code(
                Kind::Bindings,
                &format!("{person},{grantee},,parent,mutual-aid,1.234,,,,")
            ),
            "too_many_decimals"
        );
    }

    #[test]
    fn unknown_scheme_relation_kind_document_province_and_flags_are_refused() {
        let person = id(CHONGQING, 4);
        let grantee = id(CHONGQING, 5);
        assert_eq!(code(Kind::Accounts, &format!("{person},Li,staff,1")), "unknown_scheme");
        let bind = |fields: &str| format!("{person},{grantee},{fields}");
        assert_eq!(
            code(Kind::Bindings, &bind(",cousin,mutual-aid,,,,,")),
            "unknown_relation"
        );
        assert_eq!(code(Kind::Bindings, &bind(",parent,gift,,,,,")), "unknown_kind");
        assert_eq!(
            code(Kind::Bindings, &bind(",parent,proxy,,,passport,,")),
            "unknown_document"
        );
        assert_eq!(code(Kind::Bindings, &bind("510100,parent,proxy,,,,,")), "bad_province");
        assert_eq!(code(Kind::Bindings, &bind("51,parent,proxy,,,,,")), "bad_province");
        assert_eq!(code(Kind::Bindings, &bind(",parent,proxy,,,,,maybe")), "bad_flag");
        assert_eq!(code(Kind::Credits, &format!("C 1,{person},1")), "bad_credit_id");
    }

    #[test]
    fn a_good_binding_row_takes_defaults_from_empty_columns() {
        let grantor = id(CHONGQING, 6);
        let grantee = id(510000, 7);
        let request = one(
            Kind::Bindings,
            &format!("{grantor},{grantee},510000,child,proxy,300,,birth-certificate,BC-1,yes"),
        );
        match request {
            Ok(ClientRequest::Bind(bind)) => {
                assert_eq!(bind.grantee_province.code(), 510000);
                assert_eq!(bind.relation, Relation::Child);
                assert_eq!(bind.kind, BindingKind::Proxy);
                assert_eq!(bind.limits.per_settlement.map(Money::fen), Some(30_000));
                assert_eq!(bind.limits.monthly, None);
                assert_eq!(bind.evidence.document, DocumentKind::BirthCertificate);
                assert_eq!(bind.evidence.reference, "BC-1");
                assert!(!bind.evidence.face_verified);
            }
            other => panic!("{other:?}"),
        }
        match one(Kind::Bindings, &format!("{grantor},{grantee},,spouse,mutual_aid,,,,,")) {
            Ok(ClientRequest::Bind(bind)) => {
                assert_eq!(bind.grantee_province, home());
                assert_eq!(bind.evidence.document, DocumentKind::HouseholdRegister);
                assert_eq!(bind.evidence.reference, DEFAULT_EVIDENCE_REF);
                assert!(bind.evidence.face_verified);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_and_extra_columns_are_reported() {
        let person = id(CHONGQING, 8);
        let error = one(Kind::Accounts, &format!("{person},Li"))
            .err()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(error.code, "missing_columns");
        assert!(error.message.contains("scheme, balance_yuan"), "{}", error.message);
        assert_eq!(
            code(Kind::Accounts, &format!("{person},Li,Hua,employee,1")),
            "too_many_columns"
        );
        assert_eq!(code(Kind::Credits, "C-1"), "missing_columns");
    }

    #[test]
    fn rows_keep_their_line_numbers_and_bad_rows_do_not_stop_the_reading() {
        let a = id(CHONGQING, 9);
        let b = id(CHONGQING, 10);
        let text = format!("credit_id,person,amount_yuan\nC-1,{a},1\n\nC-2,bad,1\nC-3,{b},\"2\n\"\nC-4,{b},3\n");
        let rows = read(Kind::Credits, &text).unwrap_or_default();
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 7]);
        assert!(rows[0].result.is_ok());
        assert_eq!(rows[1].result.as_ref().err().map(|e| e.code), Some("bad_resident_id"));
        assert_eq!(rows[1].key, "C-2");
        // A quoted amount over two lines is trimmed to "2".
        assert!(rows[2].result.is_ok());
        assert!(rows[3].result.is_ok());
        // The same with Windows line endings, blank lines first and no final newline.
        let crlf =
            format!("\r\n\r\ncredit_id,person,amount_yuan\r\nC-1,{a},1\r\n\r\n\r\nC-2,{b},\"2\r\n\"\r\nC-3,{b},3");
        let lines: Vec<u64> = read(Kind::Credits, &crlf)
            .unwrap_or_default()
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, vec![4, 7, 9]);
    }

    #[test]
    fn a_row_that_is_not_utf8_is_reported_and_the_next_one_read() {
        let a = id(CHONGQING, 11);
        let mut bytes = b"credit_id,person,amount_yuan\nC-1,\xff\xfe,1\n".to_vec();
        bytes.extend_from_slice(format!("C-2,{a},1\n").as_bytes());
        let mut reader = RowReader::new(Kind::Credits, home(), bytes.as_slice()).unwrap_or_else(|_| unreachable!());
        let first = reader.next_row();
        assert!(
            matches!(&first, Some(Ok(Parsed { line: 2, result: Err(RowError { code: "not_utf8", .. }), key, .. })) if key == "C-1")
        );
        assert!(matches!(
            reader.next_row(),
            Some(Ok(Parsed {
                line: 3,
                result: Ok(_),
                ..
            }))
        ));
        assert!(reader.next_row().is_none());
    }

    #[test]
    fn a_wrong_header_or_a_file_that_is_not_csv_is_refused() {
        assert_eq!(read(Kind::Accounts, "").err(), Some(FileError::Empty));
        let wrong = read(Kind::Accounts, "person,name,scheme,balance\n").err();
        assert!(
            matches!(&wrong, Some(FileError::BadHeader(m)) if m.contains("missing balance_yuan") && m.contains("unknown \"balance\"")),
            "{wrong:?}"
        );
        let repeated = read(Kind::Credits, "credit_id,person,amount_yuan,person\n").err();
        assert!(matches!(&repeated, Some(FileError::BadHeader(m)) if m.contains("repeated person")));
        // Data without a header: the first row is taken as the header and refused.
        let person = id(CHONGQING, 12);
        assert!(matches!(
            read(Kind::Credits, &format!("C-1,{person},1\n")),
            Err(FileError::BadHeader(_))
        ));
        let binary = [0x89u8, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0x00];
        let result = RowReader::new(Kind::Accounts, home(), &binary[..]).map(|_| ());
        assert!(matches!(result, Err(FileError::BadHeader(m)) if m.contains("not UTF-8")));
    }

    #[test]
    fn replies_are_classified_for_reruns() {
        use exchange_core::ClientError;
        let exists = ClientReply::Error(ClientError::exists("account_exists", "x"));
        assert!(matches!(
            classify(Kind::Accounts, exists.clone()),
            Outcome::AlreadyPresent
        ));
        assert!(matches!(classify(Kind::Credits, exists), Outcome::Refused { .. }));
        let duplicate = ClientReply::Error(ClientError::exists("duplicate_binding", "x"));
        assert!(matches!(classify(Kind::Bindings, duplicate), Outcome::AlreadyPresent));
        let person = PersonId::parse(&id(CHONGQING, 13)).unwrap_or_else(|_| unreachable!());
        let credited = |duplicate| ClientReply::Credited {
            person,
            balance: Money::ZERO,
            duplicate,
        };
        assert!(matches!(
            classify(Kind::Credits, credited(true)),
            Outcome::AlreadyPresent
        ));
        assert!(matches!(
            classify(Kind::Credits, credited(false)),
            Outcome::Imported { .. }
        ));
        let reused = ClientReply::Error(ClientError::exists("credit_id_reused", "x"));
        assert!(
            matches!(classify(Kind::Credits, reused), Outcome::Refused { reason, .. } if reason == "credit_id_reused")
        );
    }

    #[test]
    fn the_default_report_sits_next_to_the_file() {
        assert_eq!(
            default_report_path(Path::new("/data/accounts.csv")),
            PathBuf::from("/data/accounts.report.csv")
        );
    }

    fn kinds() -> impl Strategy<Value = Kind> {
        prop_oneof![Just(Kind::Accounts), Just(Kind::Bindings), Just(Kind::Credits)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary lines after a valid header never panic the parser, and each row read
        /// has a line number past the header.
        #[test]
        fn arbitrary_lines_never_panic(kind in kinds(), lines in proptest::collection::vec(".{0,80}", 0..8)) {
            let text = format!("{}\n{}", kind.columns().join(","), lines.join("\n"));
            if let Ok(mut reader) = RowReader::new(kind, home(), text.as_bytes()) {
                let mut steps = 0;
                while let Some(row) = reader.next_row() {
                    if let Ok(row) = row {
                        prop_assert!(row.line >= 2);
                    }
                    steps += 1;
                    prop_assert!(steps <= 64);
                }
            }
        }

        /// Arbitrary bytes (not even text) never panic the header check or the rows.
        #[test]
        fn arbitrary_bytes_never_panic(kind in kinds(), bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(mut reader) = RowReader::new(kind, home(), bytes.as_slice()) {
                let mut steps = 0;
                while reader.next_row().is_some() {
                    steps += 1;
                    prop_assert!(steps <= 1000);
                }
            }
        }

        /// Rows built from plausible fields (valid and invalid mixed) never panic.
        #[test]
        fn plausible_fields_never_panic(
            kind in kinds(),
            fields in proptest::collection::vec(prop_oneof![
                Just(String::new()),
                "[0-9]{17}[0-9Xx]",
                "-?[0-9]{0,20}(\\.[0-9]{0,4})?",
                "(employee|resident|spouse|parent|cousin|proxy|mutual-aid|true|no|510000|1100)",
                "\"[^\"]{0,10}\"",
                ".{0,20}",
            ], 0..14),
        ) {
            let text = format!("{}\n{}\n", kind.columns().join(","), fields.join(","));
            if let Ok(mut reader) = RowReader::new(kind, home(), text.as_bytes()) {
                while reader.next_row().is_some() {}
            }
        }
    }

    /// Cases of the hostile-row fuzzer: `FUZZ_CASES`, or 256.
    fn fuzz_cases() -> u32 {
        std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

        /// Hostile rows (wrong column counts, over-long fields, other scripts, control
        /// characters, amounts past the maximum, good rows in between): every line gives
        /// exactly one row, on its own line number, and every bad row its own stable reason
        /// code and a message; the good rows still parse.
        #[test]
        fn hostile_rows_are_reported_one_by_one(
            kind in kinds(),
            rows in proptest::collection::vec(
                prop_oneof![
                    3 => proptest::collection::vec(
                        prop_oneof![
                            4 => Just(String::new()),
                            4 => "[^,\"\r\n]{0,30}",
                            4 => "[0-9]{17}[0-9X]",
                            4 => "-?[0-9]{1,25}(\\.[0-9]{0,5})?",
                            4 => "[\\x01-\\x09\\x0b\\x0c\\x0e-\\x1f]{1,4}",
                            1 => (0usize..5_000).prop_map(|len| "界".repeat(len)),
                        ],
                        1..16,
                    ).prop_map(|fields| Some(fields.join(","))),
                    1 => Just(None),
                ],
                1..24,
            ),
        ) {
            let good = |n: usize| match kind {
                Kind::Accounts => format!("{},Good,employee,{n}.5", id(CHONGQING, 1)),
                Kind::Bindings => format!("{},{},,parent,mutual-aid,,,,,", id(CHONGQING, 1), id(CHONGQING, 2)),
                Kind::Credits => format!("C-{n},{},{n}", id(CHONGQING, 1)),
            };
            let lines: Vec<(String, bool)> = rows
                .into_iter()
                .enumerate()
                .map(|(n, row)| match row {
                    // A line of only blanks would be read as no row at all.
                    Some(text) if text.trim().is_empty() => (format!("x{text}"), false),
                    Some(text) => (text, false),
                    None => (good(n), true),
                })
                .collect();
            let text = format!(
                "{}\n{}\n",
                kind.columns().join(","),
                lines.iter().map(|(line, _)| line.as_str()).collect::<Vec<_>>().join("\n")
            );
            let parsed = read(kind, &text).map_err(|error| TestCaseError::fail(error.to_string()))?;
            prop_assert_eq!(parsed.len(), lines.len());
            for (index, (row, (line, is_good))) in parsed.iter().zip(&lines).enumerate() {
                prop_assert_eq!(row.line, index as u64 + 2, "{}", line);
                match &row.result {
                    Ok(_) => {}
                    Err(error) => {
                        prop_assert!(!is_good, "a good row was refused: {:?}", error);
                        prop_assert!(
                            !error.code.is_empty() && error.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                            "{:?}", error
                        );
                        prop_assert!(!error.message.is_empty());
                    }
                }
            }
        }
    }
}
