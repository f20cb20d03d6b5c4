//! Encryption at rest for credentials the gateway must use later (the Credit merchant
//! key, upstream API keys, OAuth client secrets): ChaCha20-Poly1305 under a key derived
//! from `GATEWAY_SECRET`. Stored as `enc:v1:<base64(nonce ‖ ciphertext)>`; values
//! without the prefix are read as plaintext, so older rows keep working and are
//! sealed on their next write. Changing `GATEWAY_SECRET` makes sealed values
//! unreadable (they then read as unset, and an error is logged).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

const PREFIX: &str = "enc:v1:";

/// Seals and opens stored credentials.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// Derives the key from the server secret (domain-separated from CSRF tokens).
    pub fn new(server_secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"codex-gateway/secrets/v1:");
        hasher.update(server_secret);
        let key = Key::from(<[u8; 32]>::from(hasher.finalize()));
        SecretBox { cipher: ChaCha20Poly1305::new(&key) }
    }

    /// Encrypts a value for storage; empty stays empty (means "not set").
    pub fn seal(&self, plaintext: &str) -> String {
        if plaintext.is_empty() || plaintext.starts_with(PREFIX) {
            return plaintext.to_string();
        }
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        match self.cipher.encrypt(&nonce, plaintext.as_bytes()) {
            Ok(ciphertext) => {
                let mut blob = nonce.to_vec();
                blob.extend_from_slice(&ciphertext);
                format!("{PREFIX}{}", STANDARD.encode(blob))
            }
            Err(_) => {
                tracing::error!("sealing a secret failed; refusing to store it");
                String::new()
            }
        }
    }

    /// Decrypts a stored value (plaintext passes through); None when it cannot be opened.
    pub fn open(&self, stored: &str) -> Option<String> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Some(stored.to_string());
        };
        let blob = STANDARD.decode(encoded).ok()?;
        if blob.len() < 12 {
            return None;
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), ciphertext).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_round_trip_and_hide_the_plaintext() {
        let b = SecretBox::new(b"server-secret-0123456789");
        let sealed = b.seal("merchant-key");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("merchant-key"));
        assert_ne!(sealed, b.seal("merchant-key"), "fresh nonce each time");
        assert_eq!(b.open(&sealed).as_deref(), Some("merchant-key"));
        assert_eq!(b.seal(""), "");
        assert_eq!(b.open("legacy-plain").as_deref(), Some("legacy-plain"));
    }

    #[test]
    fn another_server_secret_cannot_open_them() {
        let sealed = SecretBox::new(b"one-secret-0123456789").seal("k");
        assert_eq!(SecretBox::new(b"two-secret-0123456789").open(&sealed), None);
        assert_eq!(SecretBox::new(b"one-secret-0123456789").open("enc:v1:!!"), None);
    }
}
