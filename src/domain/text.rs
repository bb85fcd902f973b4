//! Free text as people type it: product names and descriptions, notification titles and
//! bodies, the reason of a stock adjustment.
//!
//! Text is shown to other people (staff read product names, customers read
//! notifications), so it must not hold what renders differently from what it says:
//! control characters (but tabs and line breaks) and invisible format characters (Unicode
//! general category Cf: bidi overrides such as U+202E, zero-width spaces, U+FEFF, tag
//! characters). The OpenAPI document states the same rule as a pattern, built here from the
//! same predicate, so that the two cannot disagree.

use std::sync::LazyLock;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::FieldError;

/// Whether free text may not hold `c`.
pub fn refused(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r')
        && (c.is_control() || c.general_category() == GeneralCategory::Format)
}

/// Checks a text field: at most `max` characters as sent (surrounding whitespace counts,
/// though it is trimmed before the text is stored), none of them refused, and, when
/// `required`, something other than whitespace.
pub fn check(field: &str, value: &str, max: usize, required: bool) -> Result<(), FieldError> {
    if let Some(c) = value.chars().find(|c| refused(*c)) {
        let (code, what) = if c.is_control() {
            (
                "control_character",
                "control characters (other than tabs and line breaks)",
            )
        } else {
            (
                "invisible_character",
                "invisible format characters (such as bidi overrides or zero-width spaces)",
            )
        };
        return Err(FieldError::new(
            field,
            code,
            format!("must not contain {what}; found U+{:04X}", u32::from(c)),
        ));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            "too_long",
            format!("must be at most {max} characters"),
        ));
    }
    if required && value.trim().is_empty() {
        return Err(FieldError::new(field, "required", "must not be blank"));
    }
    Ok(())
}

/// The pattern (ECMA-262, as JSON Schema reads it) of text that [`check`] accepts:
/// `required` asks for one character that is neither refused nor whitespace.
pub fn pattern(required: bool) -> &'static str {
    static OPTIONAL: LazyLock<String> = LazyLock::new(|| format!("^[^{}]*$", class(refused)));
    static REQUIRED: LazyLock<String> = LazyLock::new(|| {
        let allowed = class(refused);
        let visible = class(|c| refused(c) || c.is_whitespace());
        format!("^[^{allowed}]*[^{visible}][^{allowed}]*$")
    });
    if required { &REQUIRED } else { &OPTIONAL }
}

/// The characters for which `member` holds, as the inside of a regex character class.
/// Characters of the Basic Multilingual Plane are written `\uXXXX`; those beyond it as
/// themselves, which ECMA-262 (with the `u` flag JSON Schema implies), Python and Rust
/// regexes all read alike, where their escapes differ.
pub(super) fn class(member: impl Fn(char) -> bool) -> String {
    let mut ranges: Vec<(char, char)> = Vec::new();
    for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
        if !member(c) {
            continue;
        }
        match ranges.last_mut() {
            Some((_, end)) if u32::from(*end) + 1 == u32::from(c) => *end = c,
            _ => ranges.push((c, c)),
        }
    }
    let write = |c: char| {
        if u32::from(c) <= 0xFFFF {
            format!("\\u{:04X}", u32::from(c))
        } else {
            c.to_string()
        }
    };
    ranges
        .into_iter()
        .map(|(start, end)| {
            if start == end {
                write(start)
            } else {
                format!("{}-{}", write(start), write(end))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_zero_width_and_control_characters_are_refused() {
        for bad in [
            "a\u{202E}b",
            "a\u{200B}b",
            "\u{FEFF}a",
            "a\u{2066}b",
            "a\u{E0041}",
            "a\u{0}b",
            "a\u{7}",
        ] {
            assert!(check("name", bad, 200, true).is_err(), "{bad:?}");
        }
        for good in [
            "Blue Tee",
            "  Blue Tee ",
            "two\nlines\tand a tab",
            "Café ☕",
            "日本",
        ] {
            assert!(check("name", good, 200, true).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn length_counts_characters_as_sent_and_blank_is_not_there() {
        assert!(check("name", &"é".repeat(200), 200, true).is_ok());
        assert!(check("name", &format!("a{}", " ".repeat(200)), 200, true).is_err());
        assert!(check("name", " \n\t", 200, true).is_err());
        assert!(check("description", " ", 200, false).is_ok());
        assert!(check("description", "", 200, false).is_ok());
    }

    #[test]
    fn the_patterns_name_the_refused_characters() {
        let optional = pattern(false);
        assert!(optional.starts_with("^[^\\u0000-\\u0008\\u000B-\\u000C\\u000E-\\u001F"));
        for c in ["\\u202A-\\u202E", "\\u200B-\\u200F", "\\uFEFF", "\u{E0001}"] {
            assert!(optional.contains(c), "{c} in {optional}");
        }
        // Whitespace counts as blank only in the required form.
        assert!(!optional.contains("\\u0020"));
        assert!(pattern(true).contains("\\u0020"));
    }
}
