//! The password policy for new passwords.

use crate::domain::Email;

/// A password that meets the policy: 8 to 128 characters, not the email address, and not
/// one of the most common passwords. Spaces count once: the length is measured with
/// leading and trailing whitespace dropped and each run inside folded to one space (as
/// NIST SP 800-63B allows), so eight spaces, or `"  a  "`, are refused while a passphrase
/// of words passes. The password itself is kept as typed.
pub struct NewPassword(String);

const MIN_CHARS: usize = 8;
const MAX_CHARS: usize = 128;

/// The most common passwords of public breach corpora that are 8 characters or longer.
const COMMON: &str = include_str!("common_passwords.txt");

impl NewPassword {
    /// Checks a new password; `email` is the account's address, when known.
    pub fn parse(raw: String, email: Option<&Email>) -> Result<NewPassword, &'static str> {
        // The upper bound is on what is hashed, so it counts every character.
        if raw.chars().count() > MAX_CHARS {
            return Err("must be at most 128 characters long");
        }
        let folded = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if folded.chars().count() < MIN_CHARS {
            return Err("must be at least 8 characters long, not counting repeated spaces");
        }
        let lowered = folded.to_lowercase();
        if email.is_some_and(|e| e.as_str() == lowered) {
            return Err("must not be the email address");
        }
        if COMMON.lines().any(|common| common == lowered) {
            return Err("is too common; choose a less guessable password");
        }
        Ok(NewPassword(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_refuses_short_long_common_and_email_passwords() {
        let email = Email::parse("ada@example.com").unwrap();
        for bad in [
            "short".to_string(),
            "x".repeat(129),
            "Password123".to_string(),
            "ADA@example.com".to_string(),
        ] {
            assert!(
                NewPassword::parse(bad.clone(), Some(&email)).is_err(),
                "{bad}"
            );
        }
        assert!(NewPassword::parse("correct horse battery".into(), Some(&email)).is_ok());
        assert!(
            NewPassword::parse("é".repeat(8), None).is_ok(),
            "length counts characters"
        );
    }

    #[test]
    fn whitespace_counts_once_and_does_not_hide_a_common_password() {
        for bad in [
            " ".repeat(8),
            "\t\n".repeat(8),
            "  a  b  c  d  ".into(),
            " password1 ".into(),
        ] {
            assert!(NewPassword::parse(bad.clone(), None).is_err(), "{bad:?}");
        }
        let kept = NewPassword::parse("  a cat sat on  ".into(), None).unwrap();
        assert_eq!(
            kept.as_str(),
            "  a cat sat on  ",
            "the password is kept as typed"
        );
    }

    #[test]
    fn the_common_list_is_lower_case_and_long_enough_to_matter() {
        assert!(COMMON.lines().count() >= 100);
        assert!(
            COMMON
                .lines()
                .all(|l| l == l.to_lowercase() && l.chars().count() >= 8)
        );
    }
}
