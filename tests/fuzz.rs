//! Property tests ("fuzzing" without nightly) for the parsers that read hostile bytes:
//! the incremental SSE parser and the usage meter built on it, the EasyPay signature
//! and notify parser, and the money parser. Each prints a `RELIABILITY|...` line with
//! the number of inputs tried.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use codex_gateway::domain::payment::epay::{self, Params};
use codex_gateway::domain::proxy::metering::{Api, Meter};
use codex_gateway::domain::proxy::sse::{SseEvent, SseParser};
use codex_gateway::foundation::money::Money;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

fn cases() -> u32 {
    if std::env::var_os("RELIABILITY_LONG").is_some() {
        20_000
    } else {
        256
    }
}

/// Every event of `bytes` fed in pieces cut at `cuts` (positions, any order), plus finish().
fn parse_split(bytes: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, Option<SseEvent>, Vec<u8>) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for w in points.windows(2) {
        events.extend(parser.feed(&bytes[w[0]..w[1]]));
    }
    let (last, rest) = parser.finish();
    (events, last, rest.to_vec())
}

fn meter_split(api: Api, drop_usage: bool, bytes: &[u8], cuts: &[usize]) -> (String, Vec<u8>, String) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.extend([0, bytes.len()]);
    points.sort_unstable();
    points.dedup();
    let mut meter = Meter::new(api, true, drop_usage);
    let mut out = Vec::new();
    for w in points.windows(2) {
        out.extend_from_slice(&meter.pass(bytes::Bytes::copy_from_slice(&bytes[w[0]..w[1]])));
    }
    out.extend_from_slice(&meter.finish());
    (format!("{:?}", meter.reported_usage()), out, format!("{:?}", meter.estimate(100)))
}

/// A realistic event stream: Responses deltas, comments, a completed event with usage,
/// with random line endings (`\n`, `\r\n`, `\r`).
fn responses_stream() -> impl Strategy<Value = Vec<u8>> {
    let delta = "[a-zA-Z0-9 é中\\\\\"]{0,12}".prop_map(|t| {
        format!(r#"{{"type":"response.output_text.delta","delta":{}}}"#, serde_json::to_string(&t).unwrap())
    });
    let usage = (0i64..100_000, 0i64..1000, 0i64..50_000).prop_map(|(i, c, o)| {
        format!(
            r#"{{"type":"response.completed","response":{{"usage":{{"input_tokens":{i},"input_tokens_details":{{"cached_tokens":{c}}},"output_tokens":{o},"output_tokens_details":{{"reasoning_tokens":0}}}}}}}}"#
        )
    });
    let event = prop_oneof![
        4 => delta.prop_map(|d| (Some("response.output_text.delta".to_string()), Some(d))),
        1 => usage.prop_map(|u| (Some("response.completed".to_string()), Some(u))),
        1 => Just((None, None)),
        1 => "[ -~]{0,20}".prop_map(|junk| (None, Some(junk))),
    ];
    let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
    proptest::collection::vec((event, ending), 0..12).prop_map(|events| {
        let mut out = String::new();
        for ((name, data), nl) in events {
            match (name, data) {
                (None, None) => out.push_str(&format!(": keep-alive{nl}{nl}")),
                (name, Some(data)) => {
                    if let Some(n) = name {
                        out.push_str(&format!("event: {n}{nl}"));
                    }
                    out.push_str(&format!("data: {data}{nl}{nl}"));
                }
                (Some(n), None) => out.push_str(&format!("event: {n}{nl}{nl}")),
            }
        }
        out.into_bytes()
    })
}

fn chat_stream() -> impl Strategy<Value = Vec<u8>> {
    let content = "[a-z \\\\\"é]{0,10}".prop_map(|t| {
        format!(r#"{{"choices":[{{"index":0,"delta":{{"content":{}}}}}]}}"#, serde_json::to_string(&t).unwrap())
    });
    let usage = (0i64..100_000, 0i64..50_000).prop_map(|(p, c)| {
        format!(r#"{{"choices":[],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{}}}}}"#, p + c)
    });
    let data = prop_oneof![4 => content, 1 => usage, 1 => Just("[DONE]".to_string())];
    proptest::collection::vec((data, prop_oneof![Just("\n"), Just("\r\n")]), 0..10).prop_map(|events| {
        events.into_iter().map(|(d, nl)| format!("data: {d}{nl}{nl}")).collect::<String>().into_bytes()
    })
}

/// Runs one property for `cases()` inputs and prints its report line.
fn fuzz<S: Strategy>(scenario: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let n = cases();
    let mut runner = TestRunner::new(Config { cases: n, failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, test);
    println!("RELIABILITY|{scenario}|db=none|inputs={n}|violations={}", u32::from(result.is_err()));
    if let Err(e) = result {
        panic!("{scenario}: {e}");
    }
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), 0..16)
}

/// Cutting the same byte stream anywhere yields the same events, byte for byte, and
/// nothing received is lost or duplicated.
#[test]
fn sse_events_do_not_depend_on_where_the_stream_is_cut() {
    fuzz("fuzz_sse_split_events", (responses_stream(), cuts()), |(bytes, cuts)| {
        let whole = parse_split(&bytes, &[]);
        let split = parse_split(&bytes, &cuts);
        prop_assert_eq!(&whole, &split);
        let mut raw: Vec<u8> = whole.0.iter().flat_map(|e| e.raw.to_vec()).collect();
        if let Some(e) = &whole.1 {
            raw.extend_from_slice(&e.raw);
        }
        raw.extend_from_slice(&whole.2);
        prop_assert_eq!(raw, bytes);
        Ok(())
    });
}

/// Arbitrary bytes never panic the parser, and splitting them changes nothing.
#[test]
fn sse_parser_survives_arbitrary_bytes_split_anywhere() {
    fuzz("fuzz_sse_arbitrary_bytes", (proptest::collection::vec(any::<u8>(), 0..300), cuts()), |(bytes, cuts)| {
        prop_assert_eq!(parse_split(&bytes, &[]), parse_split(&bytes, &cuts));
        Ok(())
    });
}

/// The meter reads the same usage and estimate however the stream is cut, and forwards
/// the same bytes (the input itself when it drops nothing).
#[test]
fn metered_usage_does_not_depend_on_where_the_stream_is_cut() {
    fuzz("fuzz_sse_usage_meter", (responses_stream(), chat_stream(), cuts()), |(responses, chat, cuts)| {
        let whole = meter_split(Api::Responses, false, &responses, &[]);
        prop_assert_eq!(&whole, &meter_split(Api::Responses, false, &responses, &cuts));
        prop_assert_eq!(&whole.1, &responses);
        for drop_usage in [false, true] {
            let whole = meter_split(Api::Chat, drop_usage, &chat, &[]);
            prop_assert_eq!(&whole, &meter_split(Api::Chat, drop_usage, &chat, &cuts));
            if !drop_usage {
                prop_assert_eq!(&whole.1, &chat);
            }
        }
        Ok(())
    });
}

/// A signed notify verifies; changing any signed value, the key or the signature does not.
#[test]
fn epay_signatures_bind_every_signed_value() {
    let strategy = (
        proptest::collection::btree_map("[a-z_]{1,12}", "[ -~é中]{0,16}", 1..8),
        "[ -~]{1,24}",
        any::<usize>(),
        "[ -~]{1,8}",
    );
    fuzz("fuzz_epay_signature", strategy, |(fields, key, pick, replacement)| {
        let params: Params = fields.into_iter().filter(|(k, _)| k != "sign" && k != "sign_type").collect();
        let signed = epay::signed(params.clone(), &key);
        prop_assert!(epay::verify(&signed, &key));
        let other_key = format!("{key}x");
        prop_assert!(!epay::verify(&signed, &other_key));
        let names: Vec<String> = params.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.clone()).collect();
        if !names.is_empty() {
            let name = &names[pick % names.len()];
            if signed[name] != replacement {
                let mut tampered = signed.clone();
                tampered.insert(name.clone(), replacement.clone());
                prop_assert!(!epay::verify(&tampered, &key), "changing {} went unnoticed", name);
            }
        }
        let mut unsigned = signed.clone();
        unsigned.remove("sign");
        prop_assert!(!epay::verify(&unsigned, &key));
        Ok(())
    });
}

/// Hostile notify parameters never panic; what parses carries an exact, non-negative
/// 2-decimal amount.
#[test]
fn epay_notify_parser_takes_any_parameters() {
    let name = prop_oneof![
        Just("pid".to_string()),
        Just("trade_no".to_string()),
        Just("out_trade_no".to_string()),
        Just("money".to_string()),
        Just("trade_status".to_string()),
        Just("sign".to_string()),
        "[a-z]{1,6}",
    ];
    let value = prop_oneof!["[ -~]{0,12}", "-?[0-9]{0,8}(\\.[0-9]{0,4})?", "\\PC{0,8}"];
    let strategy = (proptest::collection::btree_map(name, value, 0..8), "[ -~]{0,16}");
    fuzz("fuzz_epay_notify_parser", strategy, |(fields, key)| {
        let _ = epay::verify(&fields, &key);
        if let Ok(n) = epay::parse_notify(&fields) {
            prop_assert!(n.money.is_whole_cents());
            prop_assert!(!n.money.is_negative());
            prop_assert_eq!(Money::parse_cents(&n.money.format_2dp()).unwrap(), n.money);
        }
        Ok(())
    });
}

/// The money parser never panics and what it accepts round-trips exactly.
#[test]
fn money_parser_takes_any_text() {
    let text = prop_oneof!["\\PC{0,24}", "[-+]?[0-9]{0,20}(\\.[0-9]{0,8})?"];
    fuzz("fuzz_money_parser", text, |text| {
        if let Ok(m) = Money::parse(&text) {
            prop_assert_eq!(Money::parse(&m.to_string()).unwrap(), m);
        }
        if let Ok(m) = Money::parse_cents(&text) {
            prop_assert!(m.is_whole_cents());
        }
        Ok(())
    });
}

/// `next=` sanitiser: any text yields a local path browsers keep on this site.
#[test]
fn next_sanitiser_only_ever_answers_a_local_path() {
    fuzz("fuzz_next_sanitiser", any::<String>(), |text| {
        let next = codex_gateway::surface::web::ctx::safe_next(Some(&text));
        prop_assert!(next.starts_with('/') && !next[1..].starts_with('/'), "{next:?}");
        prop_assert!(!next.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control()), "{next:?}");
        Ok(())
    });
}

/// Masking helpers: any secret (multibyte included) gives a hint without panicking that
/// never contains the whole secret; scrubbing removes every occurrence.
#[test]
fn masking_helpers_take_any_secret() {
    fuzz("fuzz_masking_helpers", (any::<String>(), any::<String>()), |(secret, text)| {
        let hint = codex_gateway::foundation::redact::hint(&secret);
        prop_assert!(secret.chars().count() < 12 || !hint.contains(&secret));
        prop_assert!(hint.chars().count() <= 8);
        let scrubbed = codex_gateway::foundation::redact::scrub(&format!("{text}{secret}{text}"), &[&secret]);
        prop_assert!(secret.chars().count() < 4 || !scrubbed.contains(&secret));
        Ok(())
    });
}

/// What is stored of a notify is bounded whatever the sender adds.
#[test]
fn stored_notify_fields_are_bounded() {
    let params = proptest::collection::btree_map(any::<String>(), any::<String>(), 0..40);
    fuzz("fuzz_notify_storage", params, |p| {
        let kept = codex_gateway::domain::orders::notify::stored_params(&p);
        prop_assert!(kept.len() <= 11);
        prop_assert!(kept.values().all(|v| v.chars().count() <= 64));
        Ok(())
    });
}
