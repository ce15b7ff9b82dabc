//! What makes a username valid and a password acceptable.
//!
//! - Usernames: 3–32 characters of `a-z 0-9 . _ -`, starting with a letter or digit.
//!   Input is lowercased first, so `Alice` and `alice` are one account.
//! - Passwords: at least 12 characters, at most 256 bytes, and a zxcvbn score of at least 3
//!   ("safely unguessable") with the username as a known input, so `alice-password1` for
//!   `alice`, keyboard walks and common passwords are refused. zxcvbn runs on the first 64
//!   characters only, which keeps its cost bounded.

use unhidra_proto::ErrorCode;

use crate::http::ApiError;

pub const PASSWORD_MIN_CHARS: usize = 12;
pub const PASSWORD_MAX_BYTES: usize = 256;
const ZXCVBN_MIN_SCORE: u8 = 3;
const ZXCVBN_MAX_CHARS: usize = 64;

/// A rule was broken; the message says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Rejected> for ApiError {
    fn from(r: Rejected) -> Self {
        ApiError::bad_request(r.code, r.message)
    }
}

fn rejected(code: ErrorCode, message: impl Into<String>) -> Rejected {
    Rejected {
        code,
        message: message.into(),
    }
}

/// Normalizes and checks a username.
pub fn username(raw: &str) -> Result<String, Rejected> {
    let name = raw.trim().to_ascii_lowercase();
    let bad = |why: &str| Err(rejected(ErrorCode::InvalidUsername, why));
    if !(3..=32).contains(&name.chars().count()) {
        return bad("username must be 3 to 32 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return bad("username may contain only letters, digits, '.', '_' and '-'");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("username must start with a letter or a digit");
    }
    Ok(name)
}

/// Checks a new password for `username`.
pub fn password(password: &str, username: &str) -> Result<(), Rejected> {
    let weak = |why: String| Err(rejected(ErrorCode::WeakPassword, why));
    if password.chars().count() < PASSWORD_MIN_CHARS {
        return weak(format!(
            "password must be at least {PASSWORD_MIN_CHARS} characters"
        ));
    }
    if password.len() > PASSWORD_MAX_BYTES {
        return weak(format!(
            "password must be at most {PASSWORD_MAX_BYTES} bytes"
        ));
    }
    let head: String = password.chars().take(ZXCVBN_MAX_CHARS).collect();
    let estimate = zxcvbn::zxcvbn(&head, &[username, "unhidra"]);
    if u8::from(estimate.score()) < ZXCVBN_MIN_SCORE {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .unwrap_or_else(|| "it is too easy to guess".to_owned());
        return weak(format!("password is too weak: {hint}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_and_checked() {
        assert_eq!(username("Alice").unwrap(), "alice");
        assert_eq!(username(" bob.smith_2 ").unwrap(), "bob.smith_2");
        for bad in [
            "ab",
            "a".repeat(33).as_str(),
            "al ice",
            "ålice",
            "-alice",
            "al/ice",
            "",
        ] {
            let err = username(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidUsername, "{bad:?}");
        }
    }

    #[test]
    fn short_long_and_guessable_passwords_are_refused() {
        assert!(password("Xk3!pQ9#", "alice")
            .unwrap_err()
            .message
            .contains("12"));
        let long = "x".repeat(257);
        assert!(password(&long, "alice")
            .unwrap_err()
            .message
            .contains("256"));
        for weak in [
            "password1234",
            "aaaaaaaaaaaaaaaa",
            "qwertyuiopasdf",
            "alice-alice-alice",
        ] {
            let err = password(weak, "alice").unwrap_err();
            assert_eq!(err.code, ErrorCode::WeakPassword, "{weak}");
        }
    }

    #[test]
    fn strong_passwords_pass() {
        password("correct horse battery staple", "alice").unwrap();
        password("vR7#mQ2!xT9$kL4@", "alice").unwrap();
        // Long passphrases are checked on their first 64 characters and pass.
        password(&"mauve tractor lantern quietly ".repeat(8), "alice").unwrap();
    }
}
