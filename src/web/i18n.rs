//! Two languages, English and 简体中文: the choice (cookie, else `Accept-Language`),
//! dictionary lookups for page strings, and translation of domain error messages.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::dict::{CODES, DICT, MESSAGES};
use crate::error::Error;

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
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

static TABLE: LazyLock<HashMap<&'static str, (&'static str, &'static str)>> =
    LazyLock::new(|| DICT.iter().map(|(k, en, zh)| (*k, (*en, *zh))).collect());

/// The page string for `key`; the key itself when missing (a test keeps that from happening).
pub fn t(lang: Lang, key: &str) -> &'static str {
    match TABLE.get(key) {
        Some((en, zh)) => match lang {
            Lang::En => en,
            Lang::Zh => zh,
        },
        None => {
            tracing::warn!(key, "missing translation");
            "?"
        }
    }
}

/// A domain message in `lang`: Chinese from the table, English capitalised.
pub fn message(lang: Lang, text: &str) -> String {
    if lang == Lang::Zh {
        if let Some((_, zh)) = MESSAGES.iter().find(|(en, _)| *en == text) {
            return (*zh).to_string();
        }
        if let Some(n) = text.strip_prefix("must be at least ").and_then(|r| r.strip_suffix(" characters")) {
            return format!("至少需要 {n} 个字符");
        }
        if let Some((low, high)) = text.strip_prefix("must be between ").and_then(|r| r.split_once(" and ")) {
            return format!("须在 {low} 到 {high} 之间");
        }
        if let Some(n) = text.strip_prefix("must be at most ").and_then(|r| r.strip_suffix(" characters")) {
            return format!("最多 {n} 个字符");
        }
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What to tell the user about a refusal, in `lang`.
pub fn error_text(lang: Lang, err: &Error) -> String {
    if let Some((_, en, zh)) = CODES.iter().find(|(code, _, _)| *code == err.code()) {
        return match lang {
            Lang::En => (*en).to_string(),
            Lang::Zh => (*zh).to_string(),
        };
    }
    match err {
        Error::NotFound(_) => t(lang, "error.not_found").to_string(),
        e if e.status_code().is_server_error() => match lang {
            Lang::En => "The server could not finish this request. Try again in a moment.".into(),
            Lang::Zh => "服务器暂时无法完成请求，请稍后重试。".into(),
        },
        e => message(lang, &e.public_message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        assert_eq!(from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(from_accept_language("en-US,en;q=0.9,zh-CN;q=0.8"), Lang::En);
        assert_eq!(from_accept_language("fr-FR,zh;q=0.5"), Lang::Zh);
        assert_eq!(from_accept_language("de"), Lang::En);
        assert_eq!(from_accept_language(""), Lang::En);
    }

    #[test]
    fn every_key_has_both_languages_and_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for (key, en, zh) in DICT {
            assert!(seen.insert(*key), "duplicate key {key}");
            assert!(!en.is_empty() && !zh.is_empty(), "{key} lacks a translation");
        }
    }

    #[test]
    fn every_key_the_templates_and_handlers_use_is_in_the_dictionary() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut missing = Vec::new();
        for dir in ["templates", "src/web"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                for piece in text.split(".t(\"").skip(1) {
                    let key = piece.split('"').next().unwrap();
                    if key.contains('.') && !TABLE.contains_key(key) {
                        missing.push(key.to_string());
                    }
                }
            }
        }
        assert!(missing.is_empty(), "keys missing from the dictionary: {missing:?}");
    }

    #[test]
    fn domain_messages_are_translated_or_capitalised() {
        assert_eq!(message(Lang::Zh, "is not a valid email address"), "不是有效的邮箱地址");
        assert_eq!(message(Lang::Zh, "must be at least 8 characters"), "至少需要 8 个字符");
        assert_eq!(message(Lang::En, "is not a valid email address"), "Is not a valid email address");
        let err = Error::conflict("email_taken", "a@b.c is already registered");
        assert_eq!(error_text(Lang::Zh, &err), "该邮箱已被注册。");
    }
}
