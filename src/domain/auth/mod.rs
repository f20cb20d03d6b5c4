//! Who is calling: the accounts, their passwords, login sessions, API keys and the
//! extractors that check them. (The accounts live here because a session names its user
//! and suspending a user ends their sessions: one unit, not two that import each other.)
//!
//! Secrets (session tokens, API keys) are random, shown to the user once, and stored
//! only as SHA-256 hashes with a unique index, so a lookup is O(1) and never compares
//! secrets byte by byte. Every lookup joins the user row, so suspending a user or
//! revoking a key takes effect on the next request.

pub mod api_keys;
pub mod extract;
pub mod password;
pub mod sessions;
pub mod throttle;
pub mod users;

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

pub use extract::{AdminUser, CurrentUser};

/// A random secret of `len` alphanumeric characters.
pub fn random_token(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Lowercase hex SHA-256, the stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Role of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Whether an account may act at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Suspended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "active" => Some(Status::Active),
            "suspended" => Some(Status::Suspended),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = random_token(40);
        let b = random_token(40);
        assert_eq!(a.len(), 40);
        assert_ne!(a, b);
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
