//! Password hashing with argon2id (PHC strings), run off the async executor.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::foundation::error::{Error, Result};

/// Minimum length; long passphrases are welcome, the cap only bounds hashing work.
pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 256;

/// Checks the password rules, naming `field` in the error.
pub fn validate(field: &str, password: &str) -> Result<()> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(Error::validation(field, format!("must be at least {MIN_PASSWORD_LEN} characters")));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(Error::validation(field, format!("must be at most {MAX_PASSWORD_LEN} characters")));
    }
    Ok(())
}

/// Hashes a password on the blocking pool (argon2 is deliberately slow).
pub async fn hash(password: &str) -> Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("hashing task failed: {e}")))?
}

/// Verifies a password against a stored PHC hash; a malformed hash never matches.
pub async fn verify(password: &str, stored: &str) -> bool {
    let password = password.to_owned();
    let stored = stored.to_owned();
    tokio::task::spawn_blocking(move || match PasswordHash::new(&stored) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    })
    .await
    .unwrap_or(false)
}

/// A fixed hash to verify against when the account does not exist, so login takes
/// the same time whether or not the email is registered.
pub async fn verify_dummy(password: &str) {
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1IYlbHc6CxLquKDxg/3qpkLQrCnzxQw40nMflI/Sugo";
    let _ = verify(password, DUMMY).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let h = hash("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h).await);
        assert!(!verify("wrong horse", &h).await);
        assert!(!verify("x", "not a hash").await);
    }

    #[test]
    fn short_passwords_are_rejected_with_the_field_name() {
        let err = validate("password", "short").unwrap_err();
        assert_eq!(err.field(), Some("password"));
        assert!(validate("password", "long enough").is_ok());
    }
}
