//! An email address, normalised so that uniqueness is case-insensitive.

use std::fmt;
use std::str::FromStr;

use email_address::EmailAddress;

/// A syntactically valid email address, trimmed and in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Longest address SMTP allows (RFC 5321, 4.5.3.1.3).
const MAX_LEN: usize = 254;

impl Email {
    /// Normalises and validates an address as a user typed it.
    pub fn parse(raw: &str) -> Result<Email, &'static str> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err("is required");
        }
        if normalised.len() > MAX_LEN {
            return Err("is longer than 254 characters");
        }
        let parsed = EmailAddress::from_str(&normalised).map_err(|_| "is not an email address")?;
        // RFC 5322 allows `user@localhost` and IP literals; nobody signs up with those.
        let domain = parsed.domain();
        if !domain.contains('.') || domain.starts_with('[') || domain.ends_with('.') {
            return Err("is not an email address");
        }
        Ok(Email(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
            Email::parse("  Ada.Lovelace@Example.COM ")
                .unwrap()
                .as_str(),
            "ada.lovelace@example.com"
        );
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
            "ada@[127.0.0.1]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }
}
