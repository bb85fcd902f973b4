//! An email address, normalised so that uniqueness is case-insensitive.
//!
//! The accepted form is plain enough to state as a pattern in the OpenAPI document, and is
//! checked here by hand to the letter of that pattern: a dot-atom local part (RFC 5322) and
//! a domain of at least two DNS labels, in ASCII, with any whitespace around it (trimmed).
//! Quoted local parts, IP literals and `localhost` are valid RFC 5322 but nobody signs up to
//! a shop with them.

use std::fmt;
use std::sync::LazyLock;

use super::text;

/// A valid email address, in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Longest address SMTP allows (RFC 5321, 4.5.3.1.3).
    pub const MAX_LEN: usize = 254;

    /// What [`Email::parse`] accepts once trimmed, as ECMA-262.
    const CORE: &str = concat!(
        r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*",
        r"@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+",
    );

    /// What [`Email::parse`] accepts (with at most [`Email::MAX_LEN`] characters, the
    /// whitespace around it included), as ECMA-262 for the OpenAPI document.
    pub fn pattern() -> &'static str {
        static PATTERN: LazyLock<String> = LazyLock::new(|| {
            let space = text::class(char::is_whitespace);
            format!("^[{space}]*{}[{space}]*$", Email::CORE)
        });
        &PATTERN
    }

    /// Validates an address as a user typed it, and trims and lower-cases it.
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        if raw.chars().count() > Self::MAX_LEN {
            return Err("is longer than 254 characters");
        }
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is required");
        }
        let invalid = "is not an email address";
        let (local, domain) = raw.split_once('@').ok_or(invalid)?;
        let atom = |a: &str| !a.is_empty() && a.bytes().all(is_atext);
        let label = |l: &str| {
            let b = l.as_bytes();
            (1..=63).contains(&b.len())
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if !local.split('.').all(atom)
            || domain.split('.').count() < 2
            || !domain.split('.').all(label)
        {
            return Err(invalid);
        }
        Ok(Email(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The characters of an RFC 5322 atom.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b)
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse(" Ada.Lovelace+shop@Example.COM\n")
                .unwrap()
                .as_str(),
            "ada.lovelace+shop@example.com"
        );
        assert!(Email::parse("a@b-c.d1").is_ok());
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
            "\"a b\"@example.com",
            "ada@[127.0.0.1]",
            "ada..b@example.com",
            ".ada@example.com",
            "ada@example..com",
            "ada@example.com.",
            "ada@-example.com",
            "ada@example-.com",
            "ada@b@example.com",
            "adé@example.com",
            "ada@exämple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
        let label = format!("ada@{}.com", "a".repeat(64));
        assert!(Email::parse(&label).is_err());
    }
}
