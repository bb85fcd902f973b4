//! Reading an event envelope without allocating: the few fields the tester needs, found by
//! scanning the bytes the server sent.
//!
//! The server writes envelopes with serde_json, compactly and in a fixed field order
//! (`seq`, `topic`, `type`, `at`, `data`; src/realtime/frames.rs), so a scan for known keys
//! is exact. Inside `data` only top-level members are looked at: nested objects and arrays
//! (an order's items) are skipped, strings with escapes included.

/// What the tester needs from one envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub seq: i64,
    pub kind: &'a [u8],
    /// Commit time, in microseconds since the Unix epoch.
    pub at_micros: i64,
    /// The raw `data` object.
    pub data: &'a [u8],
}

/// The envelope in `text`, or `None` when it is not one (a control message).
pub fn parse(text: &[u8]) -> Option<Envelope<'_>> {
    let rest = text.strip_prefix(b"{\"seq\":")?;
    let (seq, _) = leading_integer(rest)?;
    let kind = string_after(text, b"\"type\":\"")?;
    let at = string_after(text, b"\"at\":\"")?;
    let data_start = memchr::memmem::find(text, b"\"data\":")? + 7;
    Some(Envelope {
        seq,
        kind,
        at_micros: parse_rfc3339_micros(at)?,
        data: &text[data_start..],
    })
}

/// The raw string that follows `key` (which ends with the opening quote), up to its
/// closing quote. For keys whose values never hold escapes.
fn string_after<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = memchr::memmem::find(text, key)? + key.len();
    let len = memchr::memchr(b'"', &text[start..])?;
    Some(&text[start..start + len])
}

/// An optionally negative decimal integer at the start of `bytes`, and how many bytes it
/// took.
pub fn leading_integer(bytes: &[u8]) -> Option<(i64, usize)> {
    let (negative, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let mut value: i64 = 0;
    let mut n = 0;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((
        if negative { -value } else { value },
        n + usize::from(negative),
    ))
}

/// The raw values of the wanted top-level members of a JSON object, in the order of
/// `keys`: a string's value without its quotes, anything else as written.
pub fn fields<'a, const N: usize>(object: &'a [u8], keys: [&[u8]; N]) -> [Option<&'a [u8]>; N] {
    let mut found = [None; N];
    let mut i = match object.iter().position(|&b| b == b'{') {
        Some(open) => open + 1,
        None => return found,
    };
    let mut missing = N;
    while missing > 0 {
        i = skip_space(object, i);
        if object.get(i) != Some(&b'"') {
            break;
        }
        let Some(key_end) = string_end(object, i) else {
            break;
        };
        let key = &object[i + 1..key_end - 1];
        i = skip_space(object, key_end);
        if object.get(i) != Some(&b':') {
            break;
        }
        i = skip_space(object, i + 1);
        let Some(value_end) = value_end(object, i) else {
            break;
        };
        if let Some(slot) = keys.iter().position(|k| *k == key)
            && found[slot].is_none()
        {
            let value = &object[i..value_end];
            found[slot] = Some(match value {
                [b'"', inner @ .., b'"'] => inner,
                _ => value,
            });
            missing -= 1;
        }
        i = skip_space(object, value_end);
        if object.get(i) != Some(&b',') {
            break;
        }
        i += 1;
    }
    found
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Given the index of an opening quote, the index just past the closing one.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        if bytes[i] == b'\\' {
            i += 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// Given the start of a JSON value, the index just past it.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => Some(
            start
                + bytes[start..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(bytes.len() - start),
        ),
    }
}

/// `2026-11-22T10:11:12.123456Z` (or with `+00:00`, or another offset) as microseconds
/// since the Unix epoch. Fractions past microseconds are cut; no fraction is 0.
pub fn parse_rfc3339_micros(text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let bytes = text.get(range)?;
        bytes.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    if text.get(4) != Some(&b'-') || !matches!(text.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if text.get(i) == Some(&b'.') {
        i += 1;
        let mut scale = 100_000;
        while let Some(&b) = text.get(i).filter(|b| b.is_ascii_digit()) {
            micros += i64::from(b - b'0') * scale;
            scale /= 10;
            i += 1;
        }
    }
    let offset_seconds = match text.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let seconds = digits(i + 1..i + 3)? * 3600 + digits(i + 4..i + 6)? * 60;
            if *sign == b'+' { seconds } else { -seconds }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOCK: &[u8] = br#"{"seq":1042,"topic":"inventory","type":"inventory.stock_changed","at":"2026-11-22T10:11:12.123456Z","data":{"delta":1,"product_id":"0190a1b2-0000-7000-8000-000000000001","reason":"load \"test\"","sku":"LT-1","stock":1000000001,"version":7}}"#;

    #[test]
    fn an_envelope_gives_its_seq_type_time_and_data() {
        let envelope = parse(STOCK).unwrap();
        assert_eq!(envelope.seq, 1042);
        assert_eq!(envelope.kind, b"inventory.stock_changed");
        assert_eq!(envelope.at_micros, 1_795_342_272_123_456);
        let [product, version, missing] =
            fields(envelope.data, [b"product_id", b"version", b"nope"]);
        assert_eq!(product, Some(&b"0190a1b2-0000-7000-8000-000000000001"[..]));
        assert_eq!(version, Some(&b"7"[..]));
        assert_eq!(missing, None);
    }

    #[test]
    fn a_control_message_is_not_an_envelope() {
        assert_eq!(
            parse(br#"{"type":"subscribed","topics":["inventory"],"seq":9}"#),
            None
        );
    }

    #[test]
    fn fields_skip_nested_members_and_escaped_strings() {
        let order = br#"{"currency":"EUR","id":"o-1","items":[{"order_id":"o-1","name":"a \"}] b","version":99}],"note":{"id":"x"},"user_id":"u-1","version":1}"#;
        let [id, version, user] = fields(order, [b"id", b"version", b"user_id"]);
        assert_eq!(id, Some(&b"o-1"[..]));
        assert_eq!(version, Some(&b"1"[..]));
        assert_eq!(user, Some(&b"u-1"[..]));
    }

    #[test]
    fn times_parse_to_microseconds_since_the_epoch() {
        assert_eq!(parse_rfc3339_micros(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_micros(b"2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500_000)
        );
        assert_eq!(
            parse_rfc3339_micros(b"2026-11-22T11:11:12.123456789+01:00"),
            parse_rfc3339_micros(b"2026-11-22T10:11:12.123456Z")
        );
        assert_eq!(parse_rfc3339_micros(b"2026-13-22T10:11:12Z"), None);
        assert_eq!(parse_rfc3339_micros(b"yesterday"), None);
    }

    #[test]
    fn integers_may_be_negative_and_end_at_the_first_non_digit() {
        assert_eq!(leading_integer(b"-42,"), Some((-42, 3)));
        assert_eq!(leading_integer(b"7}"), Some((7, 1)));
        assert_eq!(leading_integer(b"x"), None);
    }
}
