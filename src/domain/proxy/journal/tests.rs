//! The journal's unit tests: what a dead segment yields, rotation, the send mark.

use super::*;

fn forwarded(id: &str) -> Forwarded {
    Forwarded {
        request_id: id.into(),
        user_id: 7,
        api_key_id: 3,
        admitted_at: 1_000,
        endpoint: "/responses".into(),
        model: "gpt-5".into(),
        upstream_id: Some(1),
        streamed: true,
        request_bytes: 400,
        price_input: 1_250_000,
        price_cached: 125_000,
        price_output: 10_000_000,
        markup: 1_000_000,
    }
}

/// A request registered and sent to upstream 1, as the proxy's body does.
fn sent(journal: &Journal, id: &str) -> JournalEntry {
    let entry = journal.forwarding(forwarded(id)).unwrap();
    entry.send_mark().sent(1);
    entry
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cg-journal-{name}-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_live_segment_is_not_an_orphan_and_a_dead_one_yields_what_never_settled() {
    let dir = temp_dir("orphans");
    let journal = Journal::open(&dir).unwrap();
    let settled = sent(&journal, "req_a");
    let mut streaming = sent(&journal, "req_b");
    let measured = sent(&journal, "req_c");
    settled.measured(&UsageRecord { request_id: "req_a".into(), ..Default::default() });
    settled.settled();
    streaming.last_progress = Instant::now() - PROGRESS_EVERY;
    streaming.progress(120);
    streaming.progress(180); // too soon: not written
    let record = UsageRecord {
        request_id: "req_c".into(),
        output_tokens: 9,
        cost: crate::foundation::money::Money::from_micros(4_025),
        ..Default::default()
    };
    measured.measured(&record);
    // The flush thread's tick (it may also have come already): req_a's buffered
    // `settled` line reaches the file.
    journal.0.as_ref().unwrap().current.lock().unwrap().write_settled();

    // While this instance lives, its segment is locked: nothing to replay.
    assert!(take_orphans(&dir).unwrap().is_empty());

    // A process that dies leaves its file unlocked; simulate by releasing the lock.
    let path = journal.0.as_ref().unwrap().current.lock().unwrap().path.clone();
    let copy = dir.join("dead.journal");
    std::fs::copy(&path, &copy).unwrap();
    let orphans = take_orphans(&dir).unwrap();
    assert_eq!(orphans.len(), 1);
    let unsettled = &orphans[0].unsettled;
    assert_eq!(unsettled.len(), 2);
    assert_eq!(unsettled[0].forwarded, forwarded("req_b"));
    assert_eq!(unsettled[0].text_bytes, 120);
    assert_eq!(unsettled[0].measured, None);
    assert_eq!(unsettled[1].forwarded.request_id, "req_c");
    assert_eq!(unsettled[1].measured.as_ref(), Some(&record), "read back exactly, cost included");

    // Taken once: a second scan while the first holds the lock finds nothing.
    assert!(take_orphans(&dir).unwrap().is_empty());
    for orphan in orphans {
        orphan.finish().unwrap();
    }
    assert!(!copy.exists());
    drop((streaming, measured));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_segment_is_removed_once_rotated_out_and_every_request_settled() {
    let dir = temp_dir("rotate");
    let journal = Journal::open(&dir).unwrap();
    let entry = sent(&journal, "req_a");
    let first = entry.segment.path.clone();
    entry.segment.size.store(SEGMENT_BYTES, Ordering::Relaxed);
    let next = sent(&journal, "req_b");
    assert_ne!(next.segment.path, first, "a full segment is rotated");
    assert!(first.exists(), "kept while a request in it is open");
    entry.settled();
    assert!(!first.exists(), "removed once its last request settled");

    let kept = sent(&journal, "req_c");
    let second = kept.segment.path.clone();
    next.settled();
    kept.keep();
    drop(journal);
    assert!(second.exists(), "a segment with an unsettled request stays for replay");
    let orphans = orphans_once_released(&dir);
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].unsettled.iter().map(|u| u.forwarded.request_id.as_str()).collect::<Vec<_>>(), ["req_c"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_settled_line_is_written_at_the_next_flush_tick_and_at_once_in_a_rotated_segment() {
    let dir = temp_dir("settled-tick");
    let journal = Journal::open(&dir).unwrap();
    let entry = sent(&journal, "req_a");
    let path = entry.segment.path.clone();
    let keep = sent(&journal, "req_keep"); // holds the segment open after req_a settled
    entry.settled();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&path).unwrap().contains(r#"{"settled":{"id":"req_a"}}"#) {
        assert!(Instant::now() < deadline, "the flush thread never wrote the buffered settled line");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Rotated out: a request of the old segment that settles now writes its line at once.
    keep.segment.size.store(SEGMENT_BYTES, Ordering::Relaxed);
    let next = sent(&journal, "req_next");
    assert_ne!(next.segment.path, path);
    let late = keep.segment.clone();
    keep.settled();
    assert!(std::fs::read_to_string(&path).unwrap().contains(r#"{"settled":{"id":"req_keep"}}"#));
    drop(late);
    // The flush thread may still hold the old segment for the `fsync` of its last tick:
    // the segment goes when that last holder lets go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.exists() {
        assert!(Instant::now() < deadline, "removed once its last request settled");
        std::thread::sleep(Duration::from_millis(5));
    }
    next.keep();
    drop(journal);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The dead segments in `dir`, once a dropped journal's flush thread has let go of its
/// segment (and its lock) after its last `fsync`: empty only after 5 s.
fn orphans_once_released(dir: &Path) -> Vec<Orphan> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let orphans = take_orphans(dir).unwrap();
        if !orphans.is_empty() || Instant::now() > deadline {
            return orphans;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_request_admitting_and_never_forwarded_is_listed_apart() {
    let dir = temp_dir("admitting");
    let journal = Journal::open(&dir).unwrap();
    journal.admitting("req_killed_in_admission", 7);
    journal.admitting("req_forwarded", 7);
    let entry = sent(&journal, "req_forwarded");
    entry.keep();
    drop(journal);
    let orphans = orphans_once_released(&dir);
    assert_eq!(orphans.len(), 1);
    assert_eq!(
        orphans[0].never_forwarded,
        [NeverForwarded { request_id: "req_killed_in_admission".into(), user_id: 7 }]
    );
    assert_eq!(
        orphans[0].unsettled.iter().map(|u| u.forwarded.request_id.as_str()).collect::<Vec<_>>(),
        ["req_forwarded"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_request_whose_body_was_never_sent_is_never_forwarded_and_a_failover_writes_one_line() {
    let dir = temp_dir("send-mark");
    let journal = Journal::open(&dir).unwrap();
    journal.admitting("req_still_connecting", 7);
    let connecting = journal.forwarding(forwarded("req_still_connecting")).unwrap();
    journal.admitting("req_failed_over", 7);
    let failed_over = journal.forwarding(forwarded("req_failed_over")).unwrap();
    // The first upstream got the bytes (and answered 503), the second one too.
    failed_over.send_mark().sent(4);
    failed_over.send_mark().sent(5);
    connecting.keep();
    failed_over.keep();
    drop(journal);
    let orphans = orphans_once_released(&dir);
    assert_eq!(orphans.len(), 1);
    assert_eq!(
        orphans[0].never_forwarded,
        [NeverForwarded { request_id: "req_still_connecting".into(), user_id: 7 }],
        "no byte left for it: its hold is released, nothing charged"
    );
    let unsettled = &orphans[0].unsettled;
    assert_eq!(unsettled.len(), 1, "one forwarded line per request, whatever the attempts");
    assert_eq!(unsettled[0].forwarded.request_id, "req_failed_over");
    assert_eq!(unsettled[0].forwarded.upstream_id, Some(4), "the upstream the bytes first went to");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn torn_and_foreign_lines_are_skipped() {
    let dir = temp_dir("torn");
    let path = dir.join("x.journal");
    let mut text = serde_json::to_string(&Line::Forwarded(forwarded("req_a"))).unwrap();
    text.push_str("\nnot json\n{\"forwarded\":{\"request_id\":");
    std::fs::write(&path, text).unwrap();
    let orphans = take_orphans(&dir).unwrap();
    assert_eq!(orphans[0].unsettled.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
