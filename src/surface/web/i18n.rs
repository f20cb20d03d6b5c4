//! Page languages (English, 简体中文): the choice (cookie, else `Accept-Language`),
//! lookups of page strings, and translation of domain error messages.
//!
//! The strings live in one file per language, `locales/<code>.toml`, compiled into the
//! binary by `rust-i18n` (a translator edits a file, not Rust). The tests below fail
//! when a file lacks a key another has, or a page uses a key no file has.

use std::borrow::Cow;

use crate::foundation::error::Error;

// Generates the compiled-in backend from `locales/*.toml` (build.rs reruns the build
// when a file there changes). No fallback locale: a missing key must show up (as "?"
// and a warning), and the tests keep that from happening.
rust_i18n::i18n!("locales");

/// Domain messages that carry a number, in the English shape the domain writes them;
/// each is also a key of `[messages]` in every locale file, with the same `%{…}` names.
const MESSAGE_PATTERNS: &[&str] =
    &["must be at least %{n} characters", "must be between %{low} and %{high}", "must be at most %{n} characters"];

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    /// Every language, one per file in `locales/` (a test holds the two lists together).
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Zh];

    /// Parses the cookie value or path segment (`en`, `zh`, `zh-CN`).
    pub fn parse(text: &str) -> Option<Lang> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "zh" || lower.starts_with("zh-") || lower.starts_with("zh_") {
            Some(Lang::Zh)
        } else if lower == "en" || lower.starts_with("en-") || lower.starts_with("en_") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The cookie value.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `<html lang>` value.
    pub fn html_code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The language the switch in the page header offers.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }
}

/// The preferred supported language of an `Accept-Language` header (highest q wins,
/// earlier entries win ties); English when nothing matches.
pub fn from_accept_language(header: &str) -> Lang {
    let mut best: Option<(f32, Lang)> = None;
    for item in header.split(',') {
        let mut pieces = item.split(';');
        let Some(lang) = pieces.next().and_then(Lang::parse) else { continue };
        let q =
            pieces.find_map(|p| p.trim().strip_prefix("q=")).and_then(|q| q.trim().parse::<f32>().ok()).unwrap_or(1.0);
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l).unwrap_or(Lang::En)
}

/// The page string for `key`; `"?"` and a warning when missing (a test keeps that from happening).
pub fn t(lang: Lang, key: &str) -> &'static str {
    lookup(lang, key).unwrap_or_else(|| {
        tracing::warn!(key, lang = lang.code(), "missing translation");
        "?"
    })
}

/// The compiled-in text of `key` in `lang`. The backend lends its static strings
/// (`Cow::Borrowed`), which is what lets `t` hand out `&'static str` to the templates.
fn lookup(lang: Lang, key: &str) -> Option<&'static str> {
    match _rust_i18n_try_translate(lang.code(), key)? {
        Cow::Borrowed(text) => Some(text),
        Cow::Owned(_) => None,
    }
}

/// A domain message in `lang`: its entry under `[messages]` (exact text, then the
/// patterns that carry a number), else the English text capitalised.
pub fn message(lang: Lang, text: &str) -> String {
    if let Some(found) = lookup(lang, &format!("messages.{text}")) {
        return found.to_string();
    }
    for pattern in MESSAGE_PATTERNS {
        if let (Some(values), Some(found)) = (fill(pattern, text), lookup(lang, &format!("messages.{pattern}"))) {
            let names: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
            let values: Vec<String> = values.iter().map(|(_, value)| (*value).to_string()).collect();
            return rust_i18n::replace_patterns(found, &names, &values);
        }
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The values `text` gives the `%{name}`s of `pattern`, or `None` when it has another shape.
/// A value runs to the first occurrence of the literal after it (to the end for the last).
fn fill<'p, 't>(pattern: &'p str, text: &'t str) -> Option<Vec<(&'p str, &'t str)>> {
    let (lead, mut pattern_rest) = pattern.split_once("%{").unwrap_or((pattern, ""));
    let mut text_rest = text.strip_prefix(lead)?;
    let mut values = Vec::new();
    if pattern_rest.is_empty() {
        return text_rest.is_empty().then_some(values);
    }
    loop {
        let (name, after) = pattern_rest.split_once('}')?;
        let (literal, next) = after.split_once("%{").unwrap_or((after, ""));
        if next.is_empty() {
            values.push((name, text_rest.strip_suffix(literal)?));
            return Some(values);
        }
        let (value, rest) = text_rest.split_once(literal)?;
        values.push((name, value));
        text_rest = rest;
        pattern_rest = next;
    }
}

/// Stored English texts that carry a value (order subjects, ledger notes); each is also a
/// key of `[notes]` in every locale file, with the same `%{…}` names.
const NOTE_PATTERNS: &[&str] = &["Balance top-up %{amount}", "refund of order %{order}"];

/// A text the domain stored in English (an order's subject, a ledger note) in `lang`:
/// its `[notes]` entry, a pattern of [`NOTE_PATTERNS`], else the text as stored (a
/// package name or an operator's reason is shown as typed).
pub fn stored_text(lang: Lang, text: &str) -> String {
    if let Some(found) = lookup(lang, &format!("notes.{text}")) {
        return found.to_string();
    }
    for pattern in NOTE_PATTERNS {
        if let (Some(values), Some(found)) = (fill(pattern, text), lookup(lang, &format!("notes.{pattern}"))) {
            let names: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
            let values: Vec<String> = values.iter().map(|(_, value)| (*value).to_string()).collect();
            return rust_i18n::replace_patterns(found, &names, &values);
        }
    }
    text.to_string()
}

/// A ledger entry's kind (`topup`, `usage`, …) in `lang`; an unknown kind as stored.
pub fn ledger_kind(lang: Lang, kind: &str) -> String {
    lookup(lang, &format!("ledger.kind_{kind}")).map(str::to_string).unwrap_or_else(|| kind.to_string())
}

/// What to tell the user about a refusal, in `lang`.
pub fn error_text(lang: Lang, err: &Error) -> String {
    if let Some(found) = lookup(lang, &format!("refusals.{}", err.code())) {
        return found.to_string();
    }
    match err {
        Error::NotFound(_) => t(lang, "error.not_found").to_string(),
        e if e.status_code().is_server_error() => t(lang, "error.server_retry").to_string(),
        e => message(lang, &e.public_message()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use super::*;

    /// Every `key = "text"` of a locale file, nested tables joined with dots (as rust-i18n does).
    fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, inner) in table {
                    let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    flatten(&key, inner, out);
                }
            }
            toml::Value::String(text) => {
                out.insert(prefix.to_string(), text.clone());
            }
            other => panic!("{prefix} is {other:?}, not a string"),
        }
    }

    /// The locale files as read from disk, by file stem.
    fn locale_files() -> BTreeMap<String, BTreeMap<String, String>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("locales");
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            let value: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let mut keys = BTreeMap::new();
            flatten("", &value, &mut keys);
            files.insert(stem, keys);
        }
        files
    }

    #[test]
    fn stored_subjects_notes_and_ledger_kinds_are_translated() {
        assert_eq!(stored_text(Lang::Zh, "Balance top-up 3.00"), "余额充值 3.00");
        assert_eq!(stored_text(Lang::En, "Balance top-up 3.00"), "Balance top-up 3.00");
        assert_eq!(stored_text(Lang::Zh, "refund of order CG123"), "订单 CG123 退款");
        assert_eq!(stored_text(Lang::Zh, "redemption code"), "兑换码");
        assert_eq!(stored_text(Lang::Zh, "Pro <monthly>"), "Pro <monthly>", "a package name is shown as typed");
        for kind in [
            "usage",
            "topup",
            "package_purchase",
            "package_grant",
            "package_credit",
            "package_end",
            "admin_adjust",
            "refund",
            "redeem",
        ] {
            assert_ne!(ledger_kind(Lang::Zh, kind), kind, "{kind} has a Chinese name");
            assert_ne!(ledger_kind(Lang::En, kind), kind, "{kind} has an English name");
        }
        assert_eq!(ledger_kind(Lang::Zh, "future_kind"), "future_kind");
    }

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        assert_eq!(from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(from_accept_language("en-US,en;q=0.9,zh-CN;q=0.8"), Lang::En);
        assert_eq!(from_accept_language("fr-FR,zh;q=0.5"), Lang::Zh);
        assert_eq!(from_accept_language("de"), Lang::En);
        assert_eq!(from_accept_language(""), Lang::En);
    }

    #[test]
    fn every_language_has_a_file_and_every_file_a_language() {
        let files: BTreeSet<String> = locale_files().into_keys().collect();
        let langs: BTreeSet<String> = Lang::ALL.iter().map(|l| l.code().to_string()).collect();
        assert_eq!(files, langs);
    }

    #[test]
    fn every_locale_file_has_every_key_and_no_empty_text() {
        let files = locale_files();
        let all: BTreeSet<&String> = files.values().flat_map(|keys| keys.keys()).collect();
        for (code, keys) in &files {
            let missing: Vec<&&String> = all.iter().filter(|k| !keys.contains_key(k.as_str())).collect();
            assert!(missing.is_empty(), "locales/{code}.toml lacks {missing:?}");
            let empty: Vec<&String> = keys.iter().filter(|(_, text)| text.is_empty()).map(|(k, _)| k).collect();
            assert!(empty.is_empty(), "locales/{code}.toml has empty texts for {empty:?}");
        }
    }

    #[test]
    fn every_key_of_the_files_is_compiled_in_with_its_text() {
        for (code, keys) in locale_files() {
            let lang = Lang::parse(&code).unwrap();
            for (key, text) in keys {
                assert_eq!(lookup(lang, &key), Some(text.as_str()), "{code}: {key}");
            }
        }
        assert_eq!(lookup(Lang::Zh, "no.such.key"), None);
        assert_eq!(t(Lang::En, "no.such.key"), "?");
    }

    #[test]
    fn every_key_the_templates_and_handlers_use_is_in_the_dictionary() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut missing = Vec::new();
        for dir in ["templates", "src/surface/web"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                for piece in text.split(".t(\"").skip(1) {
                    let key = piece.split('"').next().unwrap();
                    if key.contains('.') && lookup(Lang::En, key).is_none() {
                        missing.push(key.to_string());
                    }
                }
            }
        }
        assert!(missing.is_empty(), "keys missing from the dictionary: {missing:?}");
    }

    #[test]
    fn message_patterns_are_the_placeholder_keys_of_the_files() {
        for (code, keys) in locale_files() {
            let with_placeholders: BTreeSet<&str> =
                keys.keys().filter_map(|k| k.strip_prefix("messages.")).filter(|k| k.contains("%{")).collect();
            assert_eq!(with_placeholders, MESSAGE_PATTERNS.iter().copied().collect(), "locales/{code}.toml");
        }
    }

    #[test]
    fn fill_reads_the_values_of_a_pattern() {
        assert_eq!(fill("must be at least %{n} characters", "must be at least 8 characters"), Some(vec![("n", "8")]));
        assert_eq!(
            fill("must be between %{low} and %{high}", "must be between 1 and 2 and 3"),
            Some(vec![("low", "1"), ("high", "2 and 3")])
        );
        assert_eq!(fill("must be at least %{n} characters", "must be at least 8"), None);
        assert_eq!(fill("is required", "is required"), Some(vec![]));
        assert_eq!(fill("is required", "is required!"), None);
    }

    #[test]
    fn domain_messages_are_translated_or_capitalised() {
        assert_eq!(message(Lang::Zh, "is not a valid email address"), "不是有效的邮箱地址");
        assert_eq!(message(Lang::Zh, "must be at least 8 characters"), "至少需要 8 个字符");
        assert_eq!(message(Lang::Zh, "must be between 1 and 1440"), "须在 1 到 1440 之间");
        assert_eq!(message(Lang::Zh, "must be between 5 and 9"), "须在 5 到 9 之间");
        assert_eq!(message(Lang::Zh, "must be at most 30 characters"), "最多 30 个字符");
        assert_eq!(message(Lang::Zh, "something new"), "Something new");
        assert_eq!(message(Lang::En, "is not a valid email address"), "Is not a valid email address");
        assert_eq!(message(Lang::En, "must be at least 8 characters"), "Must be at least 8 characters");
        assert_eq!(message(Lang::En, "something new"), "Something new");
        let err = Error::conflict("email_taken", "a@b.c is already registered");
        assert_eq!(error_text(Lang::Zh, &err), "该邮箱已被注册。");
        assert_eq!(error_text(Lang::En, &err), "This email is already registered.");
    }

    /// The English text of each message key is the key capitalised, as the domain writes it.
    #[test]
    fn english_messages_are_their_keys_capitalised() {
        for (key, text) in &locale_files()["en"] {
            if let Some(message) = key.strip_prefix("messages.") {
                let mut chars = message.chars();
                let expected: String = chars.next().unwrap().to_uppercase().chain(chars).collect();
                assert_eq!(text, &expected);
            }
        }
    }
}
