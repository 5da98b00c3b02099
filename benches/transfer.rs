//! Transfer benchmark (issue 13, "Show it"): a 1 GiB large object fetched on loopback by an
//! `HGET` into a `bin` leaf through a real DM session, against `curl` fetching the same
//! object from the same server, and the client's resident memory while it does.
//!
//! Run it with `cargo bench --bench transfer` (release build; about a minute after the
//! build, and 1.25 GiB of free disk, or 2.25 GiB without room for the object in
//! `/dev/shm`). With `OMADMD_BENCH_QUICK=1` the object
//! is 32 MiB and every part runs once: CI checks that it runs; the figures mean nothing then
//! and no target is judged. `OMADMD_BENCH_OBJECT_MIB=N` sets another size (the RSS goal
//! stays the same).
//!
//! Everything is real and every party is a process of its own, so that their CPU time does
//! not mix:
//!
//! - the server: the `omadm-devserver` binary of this build, TLS on loopback, serving the
//!   object file with `--object fw=PATH` (ranges, strong ETag, `Repr-Digest`). Its scenario
//!   has every session HGET a small firmware MO (`tests/fixtures/firmware.ddf`) and then
//!   `HGET {repo}/objects/fw` into its `PkgData` leaf;
//! - ours: this bench binary run again as a child process (environment
//!   `OMADMD_TRANSFER_BENCH_CLIENT`), wiring an [`Engine`] as the daemon does on a fresh
//!   store (a new directory each run, on the same file system as the object) with a DM
//!   account for the server. It times one session, from `Engine::run` until it returns
//!   (the leaf then holds the object: the transfer's checkpoints every 2 MiB, its final
//!   sync, the digest check, the publication and the durable leaf write are all inside),
//!   and checks the leaf's size and SHA-256. The command waits for the transfer (no `202`);
//! - the baselines, in the same run, alternating with ours (one of each per round, three
//!   rounds): `curl -o FILE` (writes the file, computes no digest and syncs nothing), and
//!   `curl | tee FILE | openssl dgst -sha256` (the same file written and the same digest
//!   computed as ours, still without a sync), both timed from spawn to exit and checked
//!   (size; digest). OpenSSL hashes with the CPU's SHA extensions where it has them, as
//!   ours does (the `sha2` crate); coreutils' `sha256sum` (9.1 in Debian 12) does not, and
//!   would be the pipeline's bottleneck: it is the fallback only without `openssl`.
//!
//! Reported: throughput (median of 3 and the slowest), the CPU time of the client's process
//! over the transfer (ours: the session, from `getrusage`; curl: the process or the whole
//! pipeline, from `wait4`), and the client's resident memory: `VmRSS` sampled every 50 ms
//! during the transfer, what it held when the session started, and its peak (`VmHWM`, the
//! kernel's high-water mark of the whole process, from `wait4`'s `ru_maxrss`, or the largest
//! sample where that is larger: the kernel reads its per-CPU counters approximately while the
//! process runs); goal: peak ≤ 64 MiB for the 1 GiB object (memory bounded, not growing with
//! the object). Before each
//! run the file system is synced (`syncfs`), so no run pays for the previous one's dirty
//! pages; the object itself stays in the page cache (the server read it whole at start).
//!
//! The copies' directory (curl's file, the client's store): `OMADMD_BENCH_DIR`, else the
//! temporary directory unless it is a tmpfs (RAM), else `/var/tmp`. The object itself goes
//! into `/dev/shm` when that has room (no disk space taken: the server serves it from memory
//! in any case), else beside the copies. A missed target is reported, not a failure; any
//! error exits non-zero.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use omadmd::authority::{Authority, Principal, Rights};
use omadmd::protocol::alert;
use omadmd::session::exec::ExecHandlers;
use omadmd::session::{Engine, Limits, account};
use omadmd::store::{Bounds, Pool};
use omadmd::tree::builtin;
use omadmd::tree::node::Node;
use omadmd::tree::registry::Registry;
use omadmd::tree::value::{Value, hex};
use sha2::{Digest as _, Sha256};

/// The benches' shared harness; this bench neither alternates calls in slices nor times
/// single calls, so some of it goes unused.
#[allow(dead_code)]
mod common;

use common::{Samples, build, cores, num, print_table, print_targets_met};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Set in the client child: its store, the DM URL and the CA file, one a line.
const CHILD_ENV: &str = "OMADMD_TRANSFER_BENCH_CLIENT";
/// The firmware MO of the test DDF; its `PkgData` leaf receives the object.
const FW: &str = "urn:oma:mo:ext-omadmd-fw:1.0";
/// The peak RSS goal of the client for the 1 GiB object, MiB.
const RSS_GOAL_MIB: f64 = 64.0;
/// How often the client's `VmRSS` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// `OMADMD_BENCH_QUICK=1`: a 32 MiB object and one round, to check that everything runs
/// (CI); the figures mean nothing then.
fn quick() -> bool {
    std::env::var("OMADMD_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn main() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return client_child(&spec);
    }
    let (size, rounds) = if quick() { (32 << 20, 1) } else { (1 << 30, 3) };
    let size = match std::env::var("OMADMD_BENCH_OBJECT_MIB") {
        Ok(mib) => mib.parse::<u64>()? << 20,
        Err(_) => size,
    };
    let dir = bench_dir()?;
    let tmp = tempfile::Builder::new()
        .prefix("omadmd-transfer-bench.")
        .tempdir_in(&dir)?;
    let source = source_dir(size)?;
    let source_dir = source.as_ref().map_or(tmp.path(), |s| s.path());
    let copies = if source.is_some() { 1 } else { 2 };
    let free = free_bytes(tmp.path())?;
    if free < size * copies + (256 << 20) {
        return Err(format!(
            "{}: {} MiB free; the bench needs {} MiB and room to spare",
            dir.display(),
            free >> 20,
            (size * copies) >> 20
        )
        .into());
    }
    println!(
        "omadmd transfer bench: {} cores, {} build, TLS on loopback, omadm-devserver and the client \
         each a process of their own; object {} in {} ({}), copies written to {} ({}){}",
        cores(),
        build(),
        size_label(size),
        source_dir.display(),
        fs_name(source_dir),
        dir.display(),
        fs_name(&dir),
        if quick() {
            "; QUICK mode (checks that every part runs; figures not meaningful, no target judged)"
        } else {
            ""
        }
    );
    println!(
        "columns: ours = the omadmd client, base = the baseline named in the row; median of \
         {rounds} runs, and the worst run in the p99 column; ratio = ours/base (MiB/s: < 1 is \
         slower; CPU s and MiB: > 1 is more); targets apply to ours"
    );

    let object = source_dir.join("fw.img");
    let started = Instant::now();
    let digest = make_object(&object, size)?;
    println!(
        "object: {} bytes, SHA-256 {}, written in {:.1} s",
        size,
        hex(&digest),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let server = Server::start(tmp.path(), &object)?;
    println!(
        "omadm-devserver (pid {}) serves it at {} (up in {:.1} s: it hashes the object first)",
        server.pid(),
        server.object_url,
        started.elapsed().as_secs_f64()
    );
    let curl = curl_version();
    if curl.is_none() {
        println!("curl is not installed: no baselines");
    }
    let pipe = Pipeline::find();

    let mut ours = Vec::new();
    let mut plain = Vec::new();
    let mut hashed = Vec::new();
    for round in 0..rounds {
        let run = tmp.path().join(format!("run{round}"));
        std::fs::create_dir_all(&run)?;
        sync_fs(&run)?;
        let o = ours_run(&server, &run, size, &digest)?;
        std::fs::remove_dir_all(&run)?;
        println!(
            "  round {}: ours {:.2} s ({} MiB/s), peak RSS {} MiB",
            round + 1,
            o.run.wall.as_secs_f64(),
            num(mib_per_s(size, o.run.wall)),
            num(kib_to_mib(o.run.max_rss_kib))
        );
        ours.push(o);
        if curl.is_none() {
            continue;
        }
        let out = tmp.path().join("curl.out");
        sync_fs(tmp.path())?;
        let p = curl_run(&server, &out, size, None)?;
        std::fs::remove_file(&out)?;
        sync_fs(tmp.path())?;
        let h = curl_run(&server, &out, size, Some((&pipe, &digest)))?;
        std::fs::remove_file(&out)?;
        println!(
            "  round {}: curl -o {:.2} s ({} MiB/s); {} {:.2} s ({} MiB/s)",
            round + 1,
            p.wall.as_secs_f64(),
            num(mib_per_s(size, p.wall)),
            pipe.label,
            h.wall.as_secs_f64(),
            num(mib_per_s(size, h.wall))
        );
        plain.push(p);
        hashed.push(h);
    }
    server.stop()?;

    let rows = rows(size, &ours, &plain, &hashed, pipe.label);
    print_table(&rows, 44, 6);
    let at_start = ours.iter().map(|o| o.rss_start_kib).max().unwrap_or(0);
    let sampled = ours.iter().map(|o| o.sampled_peak_kib).max().unwrap_or(0);
    let anon = ours.iter().map(|o| o.sampled_anon_kib).max().unwrap_or(0);
    let peak = ours.iter().map(|o| o.run.max_rss_kib).max().unwrap_or(0);
    println!(
        "client RSS: {} MiB when the session started, {} MiB at most while it ran (VmRSS every \
         {} ms; anonymous memory at most {} MiB), peak {} MiB (VmHWM, or the largest sample): \
         {} MiB of growth for a {} object; peak / object size {:.2}%",
        num(kib_to_mib(at_start)),
        num(kib_to_mib(sampled)),
        SAMPLE_EVERY.as_millis(),
        num(kib_to_mib(anon)),
        num(kib_to_mib(peak)),
        num(kib_to_mib(peak.saturating_sub(at_start))),
        size_label(size),
        (peak * 1024) as f64 * 100.0 / size as f64
    );
    let server_cpu = |runs: &[Run]| {
        let cpu: Vec<Duration> = runs.iter().map(|r| r.server_cpu).collect();
        format!("{:.2} s", Samples::new(cpu).median().as_secs_f64())
    };
    if !plain.is_empty() {
        println!(
            "omadm-devserver CPU per transfer (median): {} serving ours, {} serving curl -o, {} \
             serving {}",
            server_cpu(&ours.iter().map(|o| o.run).collect::<Vec<_>>()),
            server_cpu(&plain),
            server_cpu(&hashed),
            pipe.label
        );
    }
    println!("legend:");
    println!(
        "  ours: one DM session of a fresh client (its own process): Package#1, an HGET of the \
         firmware MO, then HGET {{repo}}/objects/fw into PkgData (streamed to a part file, \
         SHA-256 as it arrives, fsync + checkpoint record every 2 MiB, final sync, digest \
         check against Repr-Digest, publication, durable leaf write), Package#3, END; timed \
         in the client from Engine::run to its return"
    );
    if let Some(v) = &curl {
        println!(
            "  base: {v}, one process per run, timed from spawn to exit: `curl -o FILE` \
             (no digest, no sync) and `curl | tee FILE | {}` (the same file and digest as \
             ours, no sync); HTTP/1.1, the same CA, the same URL",
            pipe.command
        );
    }
    println!(
        "  CPU s: user + system time of the client for the whole object (ours: the session's \
         process, getrusage; curl: its process or the whole pipeline, wait4)"
    );
    println!(
        "  RSS: the client process's peak resident memory (VmHWM via wait4's ru_maxrss, or \
         the largest VmRSS sample if larger; base: curl's VmHWM)"
    );
    println!();
    print_targets_met("transfer", &rows);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Rows and targets

type Row = common::Row<Target>;

enum Target {
    AtMost(f64),
}

impl common::Target for Target {
    fn met(&self, ours: f64, _base: Option<f64>) -> bool {
        match *self {
            Target::AtMost(max) => ours <= max,
        }
    }

    fn label(&self) -> String {
        match *self {
            Target::AtMost(v) => format!("<= {}", num(v)),
        }
    }
}

fn rows(size: u64, ours: &[Ours], plain: &[Run], hashed: &[Run], pipe: &str) -> Vec<Row> {
    let ours_runs: Vec<Run> = ours.iter().map(|o| o.run).collect();
    let label = size_label(size);
    let base = |runs: &[Run]| (!runs.is_empty()).then(|| runs.to_vec());
    let mut rows = Vec::new();
    for (name, runs) in [("curl -o", base(plain)), (pipe, base(hashed))] {
        rows.push(rate_row(
            &format!("HGET, {label} vs {name}"),
            size,
            &ours_runs,
            runs.as_deref(),
        ));
    }
    for (name, runs) in [("curl -o", base(plain)), (pipe, base(hashed))] {
        rows.push(spread_row(
            &format!("CPU, {label} vs {name}"),
            "CPU s",
            &ours_runs,
            runs.as_deref(),
            |r| r.cpu.as_secs_f64(),
            None,
        ));
    }
    let goal = (!quick()).then_some(Target::AtMost(RSS_GOAL_MIB));
    rows.push(spread_row(
        &format!("peak RSS, {label} vs curl -o"),
        "MiB",
        &ours_runs,
        base(plain).as_deref(),
        |r| kib_to_mib(r.max_rss_kib),
        goal,
    ));
    rows
}

/// Throughput: the median run's, and the slowest run's in the p99 column.
fn rate_row(name: &str, size: u64, ours: &[Run], base: Option<&[Run]>) -> Row {
    let walls = |runs: &[Run]| Samples::new(runs.iter().map(|r| r.wall).collect());
    let rate = |d: Duration| mib_per_s(size, d);
    let (o, b) = (walls(ours), base.map(walls));
    Row {
        name: name.to_owned(),
        unit: "MiB/s",
        ours: rate(o.median()),
        ours_p99: Some(rate(o.p99())),
        base: b.as_ref().map(|b| rate(b.median())),
        base_p99: b.as_ref().map(|b| rate(b.p99())),
        target: None,
    }
}

/// A per-run figure: its median, and its largest in the p99 column.
fn spread_row(
    name: &str,
    unit: &'static str,
    ours: &[Run],
    base: Option<&[Run]>,
    figure: impl Fn(&Run) -> f64,
    target: Option<Target>,
) -> Row {
    let stats = |runs: &[Run]| {
        let mut v: Vec<f64> = runs.iter().map(&figure).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        (median, v[n - 1])
    };
    let (o, b) = (stats(ours), base.map(stats));
    Row {
        name: name.to_owned(),
        unit,
        ours: o.0,
        ours_p99: Some(o.1),
        base: b.map(|b| b.0),
        base_p99: b.map(|b| b.1),
        target,
    }
}

fn mib_per_s(size: u64, d: Duration) -> f64 {
    size as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn size_label(size: u64) -> String {
    if size >= 1 << 30 && size.is_multiple_of(1 << 30) {
        format!("{} GiB", size >> 30)
    } else {
        format!("{} MiB", size >> 20)
    }
}

// ---------------------------------------------------------------------------------------
// The object and its directory

/// Where the object goes: `OMADMD_BENCH_DIR`, else the temporary directory unless it is a
/// tmpfs, else `/var/tmp`.
fn bench_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("OMADMD_BENCH_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let tmp = std::env::temp_dir();
    Ok(if fs_name(&tmp) == "tmpfs" {
        PathBuf::from("/var/tmp")
    } else {
        tmp
    })
}

/// Where the object itself goes: a directory in `/dev/shm` when that is a tmpfs with room
/// for it, else `None` (beside the copies). The server reads it from memory either way (it
/// stays in the page cache after the server hashed it at start); in `/dev/shm` it takes no
/// disk space.
fn source_dir(size: u64) -> Result<Option<tempfile::TempDir>> {
    let shm = Path::new("/dev/shm");
    if fs_name(shm) != "tmpfs" || free_bytes(shm).unwrap_or(0) < size + (1 << 30) {
        return Ok(None);
    }
    Ok(Some(
        tempfile::Builder::new()
            .prefix("omadmd-transfer-bench.")
            .tempdir_in(shm)?,
    ))
}

fn statfs(path: &Path) -> std::io::Result<libc::statfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: statfs is plain old data, filled in by the call when it succeeds.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// The kind of file system `path` is on, as far as the header needs it.
fn fs_name(path: &Path) -> &'static str {
    match statfs(path).map(|s| s.f_type) {
        Ok(libc::TMPFS_MAGIC) => "tmpfs",
        Ok(libc::EXT4_SUPER_MAGIC) => "ext4",
        Ok(libc::XFS_SUPER_MAGIC) => "xfs",
        Ok(libc::BTRFS_SUPER_MAGIC) => "btrfs",
        Ok(libc::OVERLAYFS_SUPER_MAGIC) => "overlayfs",
        Ok(_) => "other file system",
        Err(_) => "unknown file system",
    }
}

fn free_bytes(path: &Path) -> Result<u64> {
    let st = statfs(path)?;
    Ok(st.f_bavail * st.f_bsize as u64)
}

/// Flushes the dirty pages of `dir`'s file system, so that the next run starts clean.
fn sync_fs(dir: &Path) -> Result<()> {
    let d = std::fs::File::open(dir)?;
    // SAFETY: `d` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Writes `size` pseudo-random bytes (xorshift) to `path`; returns their SHA-256.
fn make_object(path: &Path, size: u64) -> Result<[u8; 32]> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(hasher.finalize().into())
}

// ---------------------------------------------------------------------------------------
// The server

/// `omadm-devserver` of this build, serving the object as `objects/fw`.
struct Server {
    child: Child,
    dm_url: String,
    object_url: String,
    ca: PathBuf,
}

impl Server {
    fn start(dir: &Path, object: &Path) -> Result<Server> {
        let scenario = serde_json::json!({"name": "transfer-bench",
            "repository": {"fwmo": [{"ClientURI": format!("{FW}/fw/"),
                "MOData": {"Firmware": {"Version": "1"}}}]},
            "sessions": [{"packages": [{"commands": [
                ["HGET", "{repo}/fwmo"],
                ["HGET", "{repo}/objects/fw", format!("{FW}/fw/PkgData")]],
                "expect": [200, 200]}]}]});
        let scenario_file = dir.join("scenario.json");
        std::fs::write(&scenario_file, scenario.to_string())?;
        let certs = dir.join("certs");
        let mut child = Command::new(env!("CARGO_BIN_EXE_omadm-devserver"))
            .arg("--listen=127.0.0.1:0")
            .arg("--quiet")
            .arg("--cert-dir")
            .arg(&certs)
            .arg("--scenario")
            .arg(&scenario_file)
            .arg("--object")
            .arg(format!("fw={}", object.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("the devserver's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut dm_url, mut repo_url) = (None, None);
        while repo_url.is_none() {
            let Some(line) = lines.next().transpose()? else {
                let status = child.wait()?;
                return Err(format!("omadm-devserver ended at start: {status}").into());
            };
            if let Some(url) = line.strip_prefix("DM URL (SrvURI): ") {
                dm_url = Some(url.to_owned());
            } else if let Some(url) = line.strip_prefix("repository: ") {
                repo_url = Some(url.to_owned());
            }
        }
        // The rest of its output (none with --quiet, bar a last word) is drained.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server {
            child,
            dm_url: dm_url.ok_or("the devserver printed no DM URL")?,
            object_url: format!("{}/objects/fw", repo_url.unwrap_or_default()),
            ca: certs.join("ca.pem"),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of every live thread (`/proc/<pid>/task/*/schedstat`).
    fn cpu(&self) -> Duration {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Duration::ZERO;
        };
        let ns: u64 = tasks
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
                stat.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum();
        Duration::from_nanos(ns)
    }

    /// SIGTERM, and its end.
    fn stop(mut self) -> Result<()> {
        // SAFETY: kill(2) on our own child's PID, which has not been waited for yet.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Runs

/// One transfer by one client process.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    /// The client's user + system time.
    cpu: Duration,
    /// The client's peak RSS (VmHWM; ours: or the largest VmRSS sample, if larger), KiB.
    max_rss_kib: u64,
    /// The server's CPU time meanwhile.
    server_cpu: Duration,
}

/// Ours: the run, and the RSS sampled during it.
struct Ours {
    run: Run,
    rss_start_kib: u64,
    sampled_peak_kib: u64,
    /// The largest `RssAnon` sampled: heap and stacks, without code and other file pages.
    sampled_anon_kib: u64,
}

/// Waits for `child` with `wait4`: whether it exited with 0, and its (and its waited-for
/// descendants') resource usage.
fn wait4(child: Child) -> Result<(bool, libc::rusage)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data, filled in by the call when it succeeds.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child, not yet waited for (`child` is consumed here and its
        // handle never waits); the out-pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err.into());
        }
    }
    drop(child);
    Ok((
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        usage,
    ))
}

fn cpu_of(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The digest end of the second baseline's pipeline.
struct Pipeline {
    /// The hashing command, reading stdin and printing the hex digest first.
    command: &'static str,
    /// The pipeline in a row's name.
    label: &'static str,
}

impl Pipeline {
    /// `openssl dgst -sha256 -r` where there is an `openssl`, else `sha256sum`.
    fn find() -> Pipeline {
        let openssl = Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if openssl {
            Pipeline {
                command: "openssl dgst -sha256 -r",
                label: "curl | tee | openssl sha256",
            }
        } else {
            Pipeline {
                command: "sha256sum",
                label: "curl | tee | sha256sum",
            }
        }
    }
}

/// curl fetching the object to `out` (with `digest`: through `tee` into the pipeline's
/// hashing command, whose answer must be the digest).
fn curl_run(
    server: &Server,
    out: &Path,
    size: u64,
    digest: Option<(&Pipeline, &[u8; 32])>,
) -> Result<Run> {
    let mut cmd = match digest {
        None => {
            let mut c = Command::new("curl");
            c.args([
                "--http1.1",
                "--silent",
                "--show-error",
                "--fail",
                "--cacert",
            ])
            .arg(&server.ca)
            .arg("-o")
            .arg(out)
            .arg(&server.object_url);
            c
        }
        Some((pipe, _)) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "curl --http1.1 --silent --show-error --fail --cacert \"$1\" \"$2\" \
                     | tee \"$3\" | {}",
                    pipe.command
                ))
                .arg("sh")
                .arg(&server.ca)
                .arg(&server.object_url)
                .arg(out);
            c
        }
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let server_cpu = server.cpu();
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let mut stdout = child.stdout.take().ok_or("curl's stdout")?;
    let (ok, usage) = wait4(child)?;
    let wall = start.elapsed();
    let server_cpu = server.cpu().saturating_sub(server_cpu);
    let mut said = String::new();
    stdout.read_to_string(&mut said)?;
    if !ok {
        return Err(format!("curl of {} failed", server.object_url).into());
    }
    let got = std::fs::metadata(out)?.len();
    if got != size {
        return Err(format!("curl wrote {got} bytes of {size}").into());
    }
    if let Some((pipe, d)) = digest
        && said.split_whitespace().next() != Some(hex(d).as_str())
    {
        return Err(format!(
            "{} of curl's bytes: {said:?}, expected {}",
            pipe.command,
            hex(d)
        )
        .into());
    }
    Ok(Run {
        wall,
        cpu: cpu_of(&usage),
        max_rss_kib: usage.ru_maxrss as u64,
        server_cpu,
    })
}

/// Ours: a client process with a fresh store in `run`, one session, its `VmRSS` sampled.
fn ours_run(server: &Server, run: &Path, size: u64, digest: &[u8; 32]) -> Result<Ours> {
    let db = run.join("state/store.db");
    let spec = format!(
        "{}\n{}\n{}",
        db.display(),
        server.dm_url,
        server.ca.display()
    );
    let server_cpu = server.cpu();
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or("the client's stdout")?;
    let peak = Arc::new(AtomicU64::new(0));
    let anon = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (peak, anon, done, pid) = (peak.clone(), anon.clone(), done.clone(), child.id());
        move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                if let Some(kib) = status_kib(pid, "RssAnon:") {
                    anon.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        }
    });
    let waited = wait4(child);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (ok, usage) = waited?;
    let sampled_peak_kib = peak.load(Ordering::Relaxed);
    let server_cpu = server.cpu().saturating_sub(server_cpu);
    let mut said = String::new();
    stdout.read_to_string(&mut said)?;
    if !ok {
        return Err(format!("the client failed: {said}").into());
    }
    // "<session ns> <session CPU ns> <size> <sha256 hex> <VmRSS KiB at the session's start>"
    let f: Vec<&str> = said.split_whitespace().collect();
    let [wall, cpu, got, sha, rss_start] = f[..] else {
        return Err(format!("the client said {said:?}").into());
    };
    if got.parse::<u64>()? != size || sha != hex(digest) {
        return Err(format!("the leaf holds {got} bytes, SHA-256 {sha}").into());
    }
    Ok(Ours {
        run: Run {
            wall: Duration::from_nanos(wall.parse()?),
            cpu: Duration::from_nanos(cpu.parse()?),
            // The kernel's RSS counters are per CPU and read approximately while the process
            // runs: a sample may exceed the exact high-water mark taken at exit.
            max_rss_kib: (usage.ru_maxrss as u64).max(sampled_peak_kib),
            server_cpu,
        },
        rss_start_kib: rss_start.parse()?,
        sampled_peak_kib,
        sampled_anon_kib: anon.load(Ordering::Relaxed),
    })
}

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmRSS:`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `curl --version`'s first words, or `None` without curl.
fn curl_version() -> Option<String> {
    let out = Command::new("curl").arg("--version").output().ok()?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    out.status.success().then_some(first)
}

// ---------------------------------------------------------------------------------------
// The client child

/// The client: an engine wired as the daemon wires it on the store `db`, one session with
/// the server at `url` trusting `ca`; prints what [`ours_run`] reads.
fn client_child(spec: &str) -> Result<()> {
    let mut parts = spec.splitn(3, '\n');
    let (Some(db), Some(url), Some(ca)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("{CHILD_ENV}: {spec:?}").into());
    };
    let db = Path::new(db);
    std::fs::create_dir_all(db.parent().ok_or("the store's directory")?)?;
    let ca_pem = std::fs::read_to_string(ca)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let engine = engine(db, url, &ca_pem)?;
        engine.resume_transfers().await?;
        let acc = account::load_all(engine.authority())?.remove(0);
        let rss_start = status_kib(std::process::id(), "VmRSS:").unwrap_or(0);
        let cpu_start = own_cpu();
        let start = Instant::now();
        let outcome = engine.run(&acc, alert::CLIENT_INITIATED, None).await;
        let (wall, cpu) = (start.elapsed(), own_cpu().saturating_sub(cpu_start));
        if outcome.status != 200 {
            return Err(format!("the session ended {outcome:?}").into());
        }
        let found = engine
            .authority()
            .get(&Principal::Admin, format!("{FW}/fw/PkgData").as_str())?;
        let Some(Value::Object(object)) = found.into_iter().next().and_then(|f| f.value) else {
            return Err("PkgData holds no large object after the session".into());
        };
        println!(
            "{} {} {} {} {rss_start}",
            wall.as_nanos(),
            cpu.as_nanos(),
            object.size,
            object.hex()
        );
        Ok(())
    })
}

/// This process's user + system time.
fn own_cpu() -> Duration {
    // SAFETY: rusage is plain old data, filled in by the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    cpu_of(&usage)
}

/// The client's engine on a new store at `db`: DevInfo, the firmware DDF, and a DM account
/// for the server at `url` whose CA is `ca_pem`, with the right to the firmware MO. The
/// command waits for its transfer however long it takes (no `202`).
fn engine(db: &Path, url: &str, ca_pem: &str) -> Result<Arc<Engine>> {
    let mut types = Registry::with_builtin();
    types
        .add_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firmware.ddf"))?;
    let store = Arc::new(Pool::open(db, Bounds::default(), 1)?);
    let auth = Arc::new(
        Authority::new(store.clone(), types, Box::new(|_| {})).with_bounds(
            omadmd::authority::Bounds {
                owner_bytes: 8 << 30,
                ..omadmd::authority::Bounds::default()
            },
        ),
    );
    let devinfo = Node::Interior(BTreeMap::from([(
        "DevID".to_owned(),
        Node::Leaf(Value::Chr("urn:uuid:transfer-bench".into())),
    )]));
    auth.provide(builtin::DEVINFO, "0", "DevInfo", &devinfo, Rights::READ)?;
    let modata = serde_json::json!({"DMAcc": {"SrvID": "transfer-bench", "SrvURI": url,
        "Perm": {"p": {"MOID": FW}}, "Ext": {"CACert": ca_pem}}});
    auth.create_instance(&Principal::Admin, builtin::DMACC, &modata.to_string())?;
    let limits = Limits {
        session_seconds: 3600,
        transfer_wait_seconds: 3600,
        ..Limits::default()
    };
    let (followups, _) = omadmd::session::engine::follow_up_queue();
    Ok(Arc::new(Engine::new(
        auth,
        store,
        "urn:uuid:transfer-bench".into(),
        limits,
        ExecHandlers::from_config(&BTreeMap::new())?,
        vec![],
        followups,
    )))
}
