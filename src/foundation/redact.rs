//! Keeping stored secrets (the Credit merchant key, upstream API keys, OAuth client
//! secrets) out of every answer, error text, log line and page.
//!
//! Two habits: a transport error is formatted without its URL (the EasyPay order query
//! carries `key=` in its query string, and reqwest prints the whole URL), and any text
//! that came from outside (a gateway's answer) is scrubbed of the secrets in play
//! before it is shown. Hints of a secret are built from whole characters, so a key
//! with multibyte characters can never make a page panic.

/// Text of a transport error with its URL left out and its causes appended; safe to
/// show to an admin or to log whatever the URL carried.
pub fn transport_error(e: reqwest::Error) -> String {
    let is_timeout = e.is_timeout();
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if is_timeout && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// `text` with every occurrence of each non-trivial secret replaced by `[redacted]`
/// (secrets shorter than 4 characters are not searched: they would mangle ordinary text
/// and protect nothing).
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if secret.chars().count() >= 4 {
            out = out.replace(secret, "[redacted]");
        }
    }
    out
}

/// A hint that names a secret without revealing it: the first 3 and last 4 characters
/// of a secret of at least 12 characters (so at least 5 stay hidden), else `…`.
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_keep_whole_characters_and_hide_most_of_the_secret() {
        assert_eq!(hint("sk-abcdefghijklmnop"), "sk-…mnop");
        assert_eq!(hint("密钥密钥密钥密钥密钥密钥"), "密钥密…密钥密钥");
        assert_eq!(hint("short"), "…");
        assert_eq!(hint(""), "…");
        assert_eq!(hint("é".repeat(11).as_str()), "…");
    }

    #[test]
    fn scrubbing_removes_every_occurrence_and_ignores_trivial_secrets() {
        assert_eq!(scrub("a key=KEY1234 and KEY1234", &["KEY1234"]), "a key=[redacted] and [redacted]");
        assert_eq!(scrub("abc", &["", "a"]), "abc");
    }

    #[tokio::test]
    async fn transport_errors_do_not_carry_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api.php?act=order&key=SECRET-KEY-123"))
            .send()
            .await
            .unwrap_err();
        let text = transport_error(e);
        assert!(!text.contains("SECRET-KEY-123"), "{text}");
        assert!(!text.contains("127.0.0.1"), "{text}");
    }
}
