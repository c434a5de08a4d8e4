//! What the benchmark reads from the operating system and the nodes: CPU time and peak RSS
//! from `/proc/<pid>`, store flushes from a node's `/metrics`, and TCP payload bytes per
//! loopback connection from `ss -tinp` (the kernel's `tcp_info` counters).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// Largest `/metrics` answer read, bytes.
pub const METRICS_BYTES_MAX: u64 = 4 << 20;
/// Most processes scanned when looking for a node's pid.
pub const PROC_ENTRIES_MAX: usize = 100_000;

/// CPU time and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
    /// Peak resident set size since the process started (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident set size now (VmRSS), MiB.
    pub rss_mib: f64,
}

fn clock_ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

fn read_proc(path: PathBuf) -> Result<String, BenchError> {
    std::fs::read_to_string(&path).map_err(|error| BenchError::Proc {
        path,
        detail: error.to_string(),
    })
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn proc_sample(pid: u32) -> Result<ProcSample, BenchError> {
    let stat = read_proc(PathBuf::from(format!("/proc/{pid}/stat")))?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are the 12th and 13th after the name.
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let cpu_ticks = ticks(11).saturating_add(ticks(12));
    let status = read_proc(PathBuf::from(format!("/proc/{pid}/status")))?;
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_s: cpu_ticks as f64 / clock_ticks_per_s(),
        peak_rss_mib: kib("VmHWM:") as f64 / 1024.0,
        rss_mib: kib("VmRSS:") as f64 / 1024.0,
    })
}

/// The pid of the process whose command line contains `needle` (a node's config path).
pub fn find_pid_by_cmdline(needle: &Path) -> Option<u32> {
    let needle = needle.display().to_string();
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.take(PROC_ENTRIES_MAX).flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if args.contains(&needle) && args.iter().any(|arg| arg == "start") {
            return Some(pid);
        }
    }
    None
}

/// One counter from a node's Prometheus `/metrics` (plain HTTP on loopback).
pub fn scrape_metric(addr: SocketAddr, name: &str) -> Result<f64, BenchError> {
    let fail = |detail: String| BenchError::step("reading /metrics", detail);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(e.to_string()))?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut body = String::new();
    stream
        .take(METRICS_BYTES_MAX)
        .read_to_string(&mut body)
        .map_err(|e| fail(e.to_string()))?;
    body.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = rest.strip_prefix(' ')?;
            value.trim().parse::<f64>().ok()
        })
        .ok_or_else(|| fail(format!("{name} not found at {addr}")))
}

/// Payload bytes (both directions) of one TCP connection, seen from its client side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBytes {
    pub pid: u32,
    pub bytes: u64,
}

/// Client-side sockets of connections to any of `server_ports` on loopback, keyed by
/// (local, peer) address, with `bytes_sent + bytes_received` and the owning pid. These are
/// TLS records as TCP carries them (HTTP/2 frames, gRPC, protobuf, TLS overhead), without
/// TCP/IP headers. `None` when `ss` is missing.
pub fn tcp_bytes(server_ports: &[u16]) -> Option<BTreeMap<(String, String), SocketBytes>> {
    let output = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut sockets = BTreeMap::new();
    let mut current: Option<((String, String), u32)> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // Recv-Q Send-Q Local:Port Peer:Port [users:(("name",pid=N,fd=M))]
            let fields: Vec<&str> = line.split_whitespace().collect();
            current = None;
            let (Some(local), Some(peer)) = (fields.get(2), fields.get(3)) else {
                continue;
            };
            let peer_port = peer.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
            if !peer.starts_with("127.0.0.1:") || !peer_port.is_some_and(|port| server_ports.contains(&port)) {
                continue;
            }
            let pid = line
                .split_once("pid=")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse::<u32>().ok())
                .unwrap_or(0);
            current = Some((((*local).to_string(), (*peer).to_string()), pid));
        } else if let Some((key, pid)) = current.take() {
            let counter = |name: &str| {
                line.split_whitespace()
                    .find_map(|field| field.strip_prefix(name))
                    .and_then(|value| value.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let bytes = counter("bytes_sent:").saturating_add(counter("bytes_received:"));
            sockets.insert(key, SocketBytes { pid, bytes });
        }
    }
    Some(sockets)
}

/// Bytes carried between two samples, summed by owning pid (new sockets count from zero).
pub fn tcp_bytes_delta(
    before: &BTreeMap<(String, String), SocketBytes>,
    after: &BTreeMap<(String, String), SocketBytes>,
) -> BTreeMap<u32, u64> {
    let mut by_pid = BTreeMap::new();
    for (key, now) in after {
        let then = before.get(key).map(|b| b.bytes).unwrap_or(0);
        let entry = by_pid.entry(now.pid).or_insert(0u64);
        *entry = entry.saturating_add(now.bytes.saturating_sub(then));
    }
    by_pid
}
