//! The crash journal: a local, append-only record of every request forwarded to an
//! upstream and of what it used, so that a request served just before the process died
//! (kill -9, OOM, power loss) is still charged exactly once when the gateway comes back.
//!
//! Why a file and not the database: the database write of a settlement is batched
//! behind the response (group commit), and an admission on a hint is written behind
//! the forwarded request; a process killed in between left no trace of either. One
//! `write(2)` of a short line to a file opened with `O_APPEND` costs a few microseconds
//! and lands in the kernel's page cache, which survives the death of the process, so
//! it can be done on the request path before anything reaches the upstream. `fsync` is
//! batched (every [`SYNC_EVERY`]) by a background thread: it only matters for a power
//! loss or a kernel crash, whose window is therefore that long.
//!
//! Records are JSON lines, keyed by request id: `admitting` (the request and its user,
//! written before its admission is asked for, so that a hold committed by a process that
//! then died is known to belong to a request that was never forwarded), `forwarded` (who,
//! what, at which price, how many request bytes; written when the request's body is
//! handed to an upstream connection, see [`Journal::forwarding`]), `progress` (text bytes streamed so far, at most once a
//! second per request), `measured` (the usage record about to be settled) and
//! `settled` (buffered and appended by the flush thread at its next tick, see
//! [`JournalEntry::settled`]). Each running instance appends to a segment file of its own, holding an
//! exclusive lock on it; a segment nobody holds locked belongs to a dead instance and
//! is replayed ([`take_orphans`]) at start: every request without `settled` is settled
//! through the ordinary billing path — from its measured record, or else estimated
//! from what was seen — which is idempotent by request id, so replaying a request that
//! did reach the database changes nothing; a request `admitting` and never `forwarded`
//! has its hold, if one was written, released uncharged. A segment is deleted once it is rotated out
//! and every request it recorded has settled.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::domain::billing::UsageRecord;

/// How often written records are flushed to the disk (the power-loss window).
pub const SYNC_EVERY: Duration = Duration::from_millis(20);

/// A segment larger than this is rotated (deleted once its requests have settled).
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// A streaming request writes its progress at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What is known of a request when it is forwarded: enough to charge it if nothing
/// else is ever heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub request_id: String,
    pub user_id: i64,
    pub api_key_id: i64,
    /// Admission instant, micro-seconds since the epoch (the day and package it belongs to).
    pub admitted_at: i64,
    pub endpoint: String,
    pub model: String,
    pub upstream_id: Option<i64>,
    pub streamed: bool,
    pub request_bytes: u64,
    /// Micro-USD per 1M tokens: uncached input, cached input, output.
    pub price_input: i64,
    pub price_cached: i64,
    pub price_output: i64,
    /// The markup in micro-units (1.00 = 1,000,000).
    pub markup: i64,
}

/// Externally tagged (`{"measured": {...}}`): an internally tagged enum buffers its
/// content, and [`crate::foundation::money::Money`] cannot be read back from a buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Admitting { id: String, user_id: i64 },
    Forwarded(Forwarded),
    Progress { id: String, text_bytes: u64 },
    Measured { id: String, record: UsageRecord },
    Settled { id: String },
}

/// A request of a dead instance's journal that never settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsettled {
    pub forwarded: Forwarded,
    /// The text bytes streamed to the client, as last recorded.
    pub text_bytes: u64,
    /// The usage record the proxy measured, if it got that far.
    pub measured: Option<UsageRecord>,
}

/// A request of a dead instance's journal that was being admitted and never forwarded:
/// nothing of it reached an upstream, and its hold (if the admission committed) is to be
/// released uncharged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeverForwarded {
    pub request_id: String,
    pub user_id: i64,
}

/// This instance's journal (disabled: every call does nothing).
#[derive(Clone, Default)]
pub struct Journal(Option<Arc<Inner>>);

struct Inner {
    dir: PathBuf,
    current: Mutex<Arc<Segment>>,
    dirty: AtomicBool,
}

struct Segment {
    path: PathBuf,
    /// Opened for appending and locked exclusively while this instance lives.
    file: File,
    size: AtomicU64,
    /// Set when a request in it could not be settled: the segment is then left on disk
    /// for the next start to replay.
    keep: AtomicBool,
    /// Encoded `settled` lines not yet written (appended in one `write(2)` per flush
    /// tick), and whether the segment was rotated out: then nothing is buffered any more,
    /// since the flush thread only visits the current segment.
    settled: Mutex<Settled>,
}

#[derive(Default)]
struct Settled {
    lines: Vec<u8>,
    rotated: bool,
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.keep.load(Ordering::Acquire) {
            // Kept for replay: the requests that did settle need not be replayed.
            self.write_settled();
            tracing::warn!(path = %self.path.display(), "journal segment kept for replay: a request in it is unsettled");
            return;
        }
        let _ = self.file.sync_data();
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a settled journal segment");
        }
    }
}

impl Segment {
    fn create(dir: &Path) -> std::io::Result<Segment> {
        let name = format!(
            "{}-{}-{:016x}.journal",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id(),
            rand::random::<u64>()
        );
        let path = dir.join(name);
        let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        file.try_lock().map_err(|e| std::io::Error::other(format!("cannot lock {}: {e}", path.display())))?;
        Ok(Segment {
            path,
            file,
            size: AtomicU64::new(0),
            keep: AtomicBool::new(false),
            settled: Mutex::new(Settled::default()),
        })
    }

    fn append(&self, line: &Line) {
        if let Some(bytes) = encode(line) {
            self.write_bytes(&bytes);
        }
    }

    /// Buffers a `settled` line for [`Segment::write_settled`], or writes it at once if
    /// the segment was rotated out (a request that outlived its segment's turn: rare).
    fn buffer_settled(&self, line: &Line) {
        let Some(bytes) = encode(line) else { return };
        let mut settled = self.settled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if settled.rotated {
            drop(settled);
            self.write_bytes(&bytes);
        } else {
            settled.lines.extend_from_slice(&bytes);
        }
    }

    /// Appends the buffered `settled` lines in one write; true when there were any.
    fn write_settled(&self) -> bool {
        let lines = std::mem::take(&mut self.settled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).lines);
        if lines.is_empty() {
            return false;
        }
        self.write_bytes(&lines);
        true
    }

    /// Rotated out: the buffered lines are written now, later ones at once (their order
    /// does not matter: a `settled` line only closes its own request).
    fn rotated_out(&self) {
        self.settled.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).rotated = true;
        self.write_settled();
    }

    fn write_bytes(&self, bytes: &[u8]) {
        // One write of whole lines: with O_APPEND it is never interleaved with another.
        if let Err(e) = (&self.file).write_all(bytes) {
            self.keep.store(true, Ordering::Release);
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the journal");
        }
        self.size.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
}

/// A record as one JSON line, newline included (None, logged, if it cannot be encoded).
fn encode(line: &Line) -> Option<Vec<u8>> {
    match serde_json::to_vec(line) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            Some(bytes)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a journal record");
            None
        }
    }
}

impl Journal {
    /// A journal that records nothing (tests of other things, embedding).
    pub fn disabled() -> Journal {
        Journal(None)
    }

    /// Opens a new segment of this instance under `dir` (created if missing) and starts
    /// the thread that flushes it.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let segment = Arc::new(Segment::create(dir)?);
        let inner =
            Arc::new(Inner { dir: dir.to_path_buf(), current: Mutex::new(segment), dirty: AtomicBool::new(false) });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("journal-sync".into()).spawn(move || sync_loop(weak))?;
        Ok(Journal(Some(inner)))
    }

    /// Records a request about to be admitted (before its hold can be written): a process
    /// killed before its `forwarded` line ([`SendMark::sent`]) leaves a hold the replay
    /// knows to release.
    pub fn admitting(&self, request_id: &str, user_id: i64) {
        let Some(inner) = self.0.as_ref() else { return };
        inner.segment().append(&Line::Admitting { id: request_id.to_string(), user_id });
        inner.dirty.store(true, Ordering::Release);
    }

    /// Registers a request about to be tried upstream; keep the entry until it settles.
    /// Its `forwarded` line is not written yet: the entry's [`SendMark`] writes it when an
    /// attempt's body is first handed to an upstream connection, the last instant the
    /// gateway sees before the bytes leave. A process killed while the request was still
    /// waiting for (or opening) a connection thus leaves only its `admitting` line: the
    /// request reached no upstream, and the replay releases its hold uncharged instead of
    /// charging an estimate for it.
    pub fn forwarding(&self, forwarded: Forwarded) -> Option<JournalEntry> {
        let inner = self.0.as_ref()?;
        let segment = inner.segment();
        let request_id = forwarded.request_id.clone();
        let mark = SendMark(Arc::new(PendingLine {
            inner: inner.clone(),
            segment: segment.clone(),
            line: Mutex::new(Some(forwarded)),
        }));
        Some(JournalEntry {
            inner: inner.clone(),
            segment,
            request_id,
            last_progress: Instant::now(),
            text_bytes: 0,
            mark,
        })
    }
}

/// Writes a request's `forwarded` line, once, when its body is first handed to an
/// upstream connection (see [`Journal::forwarding`]); cloned into each attempt's body.
#[derive(Clone)]
pub struct SendMark(Arc<PendingLine>);

struct PendingLine {
    inner: Arc<Inner>,
    segment: Arc<Segment>,
    /// Taken by the first attempt whose body is sent.
    line: Mutex<Option<Forwarded>>,
}

impl SendMark {
    /// The request's bytes are going to `upstream_id` now: write its `forwarded` line
    /// (naming that upstream) unless an earlier attempt did.
    pub fn sent(&self, upstream_id: i64) {
        let taken = self.0.line.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(mut forwarded) = taken {
            forwarded.upstream_id = Some(upstream_id);
            self.0.segment.append(&Line::Forwarded(forwarded));
            self.0.inner.dirty.store(true, Ordering::Release);
        }
    }
}

impl Inner {
    /// The segment to append to, rotated when it grew past [`SEGMENT_BYTES`].
    fn segment(&self) -> Arc<Segment> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.size.load(Ordering::Relaxed) >= SEGMENT_BYTES {
            match Segment::create(&self.dir) {
                Ok(next) => {
                    current.rotated_out();
                    let _ = current.file.sync_data();
                    *current = Arc::new(next);
                }
                Err(e) => tracing::warn!(error = %e, "cannot rotate the journal; appending to the full segment"),
            }
        }
        current.clone()
    }
}

fn sync_loop(inner: Weak<Inner>) {
    loop {
        std::thread::sleep(SYNC_EVERY);
        let Some(inner) = inner.upgrade() else { return };
        let segment = inner.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        if segment.write_settled() {
            inner.dirty.store(true, Ordering::Release);
        }
        if inner.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = segment.file.sync_data() {
                tracing::warn!(error = %e, "cannot flush the journal");
            }
        }
    }
}

/// One forwarded request's place in the journal, from forwarding to settlement.
pub struct JournalEntry {
    inner: Arc<Inner>,
    segment: Arc<Segment>,
    request_id: String,
    last_progress: Instant,
    text_bytes: u64,
    mark: SendMark,
}

impl JournalEntry {
    /// What each attempt's body carries to write the `forwarded` line when it is sent.
    pub fn send_mark(&self) -> SendMark {
        self.mark.clone()
    }

    /// Notes how much text has streamed so far (written at most once a second).
    pub fn progress(&mut self, text_bytes: u64) {
        if text_bytes == self.text_bytes || self.last_progress.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_progress = Instant::now();
        self.text_bytes = text_bytes;
        self.write(Line::Progress { id: self.request_id.clone(), text_bytes });
    }

    /// Records the usage about to be settled.
    pub fn measured(&self, record: &UsageRecord) {
        self.write(Line::Measured { id: self.request_id.clone(), record: record.clone() });
    }

    /// The charge is in the database: nothing to replay for this request any more.
    ///
    /// The line is buffered, not written: the flush thread appends the buffered ones in
    /// one `write(2)` at its next tick ([`SYNC_EVERY`]), which saves a system call per
    /// request (measured in README's Benchmark section). A process killed in between
    /// leaves the request looking unsettled, and the replay settles it again, which
    /// changes nothing (settlement is idempotent by request id). The entry's hold on its
    /// segment is still let go here, so a rotated segment whose requests all settled is
    /// removed as before.
    pub fn settled(self) {
        self.segment.buffer_settled(&Line::Settled { id: self.request_id.clone() });
    }

    /// The charge could not be written: leave the segment for the next start to replay.
    pub fn keep(self) {
        self.segment.keep.store(true, Ordering::Release);
    }

    fn write(&self, line: Line) {
        self.segment.append(&line);
        self.inner.dirty.store(true, Ordering::Release);
    }
}

/// A dead instance's segment, locked by this process until it is [`Orphan::finish`]ed.
pub struct Orphan {
    path: PathBuf,
    _lock: File,
    pub unsettled: Vec<Unsettled>,
    pub never_forwarded: Vec<NeverForwarded>,
}

impl Orphan {
    /// Every request of it is settled: the segment is removed.
    pub fn finish(self) -> std::io::Result<()> {
        std::fs::remove_file(&self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The segments under `dir` that no running instance holds (their writer died), with
/// the requests they recorded and never settled. Unreadable lines (a torn last write
/// after a power loss) are skipped.
pub fn take_orphans(dir: &Path) -> std::io::Result<Vec<Orphan>> {
    take(dir, false)
}

/// [`take_orphans`] for an instance that is already running, next to others that may
/// be starting: an empty segment is left alone (never locked), because a starting
/// instance creates its segment empty and locks it a moment later — locking it first
/// would make that instance fail, and removing it would lose its journal. A segment
/// with a line in it was locked by its writer before its first line, so an unlocked
/// one belongs to a dead instance.
pub fn take_orphans_while_running(dir: &Path) -> std::io::Result<Vec<Orphan>> {
    take(dir, true)
}

fn take(dir: &Path, skip_empty: bool) -> std::io::Result<Vec<Orphan>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect();
    paths.sort();
    let mut orphans = Vec::new();
    for path in paths {
        if skip_empty && std::fs::metadata(&path).map_or(true, |m| m.len() == 0) {
            continue;
        }
        let file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open a journal segment");
                continue;
            }
        };
        if file.try_lock().is_err() {
            continue; // a live instance's own segment
        }
        let (unsettled, never_forwarded) = read_unsettled(&file)?;
        orphans.push(Orphan { path, _lock: file, unsettled, never_forwarded });
    }
    Ok(orphans)
}

fn read_unsettled(file: &File) -> std::io::Result<(Vec<Unsettled>, Vec<NeverForwarded>)> {
    let mut order = Vec::new();
    let mut open: HashMap<String, Unsettled> = HashMap::new();
    let mut admitting_order = Vec::new();
    let mut admitting: HashMap<String, i64> = HashMap::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        let Ok(line) = serde_json::from_slice::<Line>(&line) else { continue };
        match line {
            Line::Admitting { id, user_id } => {
                admitting_order.push(id.clone());
                admitting.insert(id, user_id);
            }
            Line::Forwarded(forwarded) => {
                admitting.remove(&forwarded.request_id);
                order.push(forwarded.request_id.clone());
                open.insert(forwarded.request_id.clone(), Unsettled { forwarded, text_bytes: 0, measured: None });
            }
            Line::Progress { id, text_bytes } => {
                if let Some(u) = open.get_mut(&id) {
                    u.text_bytes = u.text_bytes.max(text_bytes);
                }
            }
            Line::Measured { id, record } => {
                if let Some(u) = open.get_mut(&id) {
                    u.measured = Some(record);
                }
            }
            Line::Settled { id } => {
                open.remove(&id);
            }
        }
    }
    let unsettled = order.into_iter().filter_map(|id| open.remove(&id)).collect();
    let never_forwarded = admitting_order
        .into_iter()
        .filter_map(|id| admitting.remove(&id).map(|user_id| NeverForwarded { request_id: id, user_id }))
        .collect();
    Ok((unsettled, never_forwarded))
}

#[cfg(test)]
mod tests;
