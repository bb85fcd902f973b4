//! Stock keeping units and currencies.

use std::sync::LazyLock;

use iso_currency::{Flag, IntoEnumIterator};

/// A SKU: 1 to 64 characters of letters, digits, `-`, `_` and `.`, stored upper case so
/// that uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    /// What the OpenAPI document states: nothing else, not even surrounding whitespace.
    pub const PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

    pub fn parse(raw: &str) -> Result<Sku, &'static str> {
        if raw.is_empty() || raw.len() > 64 {
            return Err("must be 1 to 64 characters long");
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err("may hold only letters, digits, '-', '_' and '.'");
        }
        Ok(Sku(raw.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217 currency that is legal tender somewhere today, by its code, such as `EUR`.
/// Funds (BOV, CHE, USN, ...), special codes (precious metals, SDRs, XTS for tests, XXX for
/// none) and superseded currencies (HRK, ...) price nothing a shop sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Every code [`Currency::parse`] accepts, in alphabetical order.
    pub fn codes() -> &'static [&'static str] {
        static CODES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
            let mut codes: Vec<&'static str> = iso_currency::Currency::iter()
                .filter(|c| is_tender(*c))
                .map(|c| c.code())
                .collect();
            codes.sort_unstable();
            codes
        });
        &CODES
    }

    /// Takes the code in upper case, as ISO 4217 writes it.
    pub fn parse(raw: &str) -> Result<Currency, &'static str> {
        let currency = iso_currency::Currency::from_code(raw)
            .filter(|c| c.code() == raw)
            .ok_or("is not an ISO 4217 currency code (in upper case)")?;
        if is_tender(currency) {
            Ok(Currency(currency))
        } else {
            Err("is a fund, special or superseded code, not a currency in circulation")
        }
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }
}

fn is_tender(currency: iso_currency::Currency) -> bool {
    currency
        .flags()
        .iter()
        .all(|f| !matches!(f, Flag::Fund | Flag::Special | Flag::Superseded(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_upper_cased_and_checked() {
        assert_eq!(Sku::parse("tee-01.blue").unwrap().as_str(), "TEE-01.BLUE");
        for bad in ["", " tee", "tee ", "a b", "x/y", "é", &"a".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn currencies_are_tender_iso_codes_in_upper_case() {
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
        for bad in [
            "eur", " EUR", "EURO", "ABC", "XXX", "XTS", "XAU", "XDR", "BOV", "CHE", "USN", "HRK",
        ] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        let codes = Currency::codes();
        assert!(codes.len() > 140, "{}", codes.len());
        assert!(codes.contains(&"USD") && codes.contains(&"JPY") && !codes.contains(&"XAU"));
        assert!(codes.iter().all(|c| Currency::parse(c).is_ok()));
    }
}
