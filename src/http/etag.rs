//! ETags from resource versions: `If-None-Match` for 304s, `If-Match` for 412s.

use axum::http::header::{ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::problem::{ApiError, ApiResult};

/// The strong ETag of a resource version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

fn parse(tag: &str) -> Option<i64> {
    tag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

/// Whether `If-None-Match` is `*` or lists an entity tag that `ours` matches, compared
/// weakly (RFC 9110, 13.1.2): the client holds the current representation.
pub fn none_match(headers: &HeaderMap, ours: impl Fn(&str) -> bool) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || ours(tag))
}

/// A 200 with the resource and its ETag, or a bodiless 304 when the client holds it.
pub fn conditional<T: Serialize>(headers: &HeaderMap, version: i64, body: &T) -> Response {
    if none_match(headers, |tag| parse(tag) == Some(version)) {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag(version))]).into_response();
    }
    tagged(StatusCode::OK, version, body)
}

/// A response with the resource and its ETag.
pub fn tagged<T: Serialize>(status: StatusCode, version: i64, body: &T) -> Response {
    (status, [(ETAG, etag(version))], axum::Json(body)).into_response()
}

/// The version `If-Match` asks for, if any. `*` asks only that the resource exists. A
/// value that is neither `*` nor a list of entity tags (RFC 9110, 13.1.1) names no version
/// of ours, so its condition is false: a 412, as for a tag of another version (it is not
/// read leniently, say `3` as `"3"`: which version it meant would be a guess).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let mut values = headers.get_all(IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    // Several field lines are one list (RFC 9110, 5.3).
    let value = values
        .map(|v| v.to_str().map(|v| v.trim_matches(OWS)))
        .collect::<Result<Vec<&str>, _>>()
        .map(|parts| parts.join(", "))
        .unwrap_or_default();
    if value == "*" {
        return Ok(None);
    }
    // Only one version can be current, so a list can match at most its first of ours.
    match entity_tags(&value)
        .unwrap_or_default()
        .into_iter()
        .find_map(|tag| tag.parse().ok())
    {
        Some(version) => Ok(Some(version)),
        None => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
            "If-Match holds no ETag this server issued",
        )),
    }
}

/// Optional whitespace around list items (RFC 9110, 5.6.3).
const OWS: [char; 2] = [' ', '\t'];

/// The ECMA-262 pattern of an `If-Match` value [`if_match`] reads.
pub const IF_MATCH_PATTERN: &str =
    r#"^[ \t]*(\*|(W/)?"[!#-~]*"([ \t]*,[ \t]*(W/)?"[!#-~]*")*)[ \t]*$"#;

/// The opaque parts of a list of entity tags (`"3", W/"4"`), or `None` if it is not one.
fn entity_tags(list: &str) -> Option<Vec<&str>> {
    let mut tags = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.strip_prefix("W/").unwrap_or(rest).strip_prefix('"')?;
        let end = rest.find('"')?;
        let opaque = &rest[..end];
        if !opaque
            .bytes()
            .all(|b| b == b'!' || (b'#'..=b'~').contains(&b))
        {
            return None;
        }
        tags.push(opaque);
        rest = rest[end + 1..].trim_start_matches(OWS);
        if rest.is_empty() {
            return Some(tags);
        }
        rest = rest.strip_prefix(',')?.trim_start_matches(OWS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(value: &str) -> ApiResult<Option<i64>> {
        let mut headers = HeaderMap::new();
        headers.insert(IF_MATCH, HeaderValue::from_str(value).unwrap());
        if_match(&headers)
    }

    #[test]
    fn if_match_takes_a_star_or_a_list_of_etags() {
        assert_eq!(asked("*").unwrap(), None);
        assert_eq!(asked("\"3\"").unwrap(), Some(3));
        assert_eq!(asked("\"x\", W/\"4\" ,\"5\"").unwrap(), Some(4));
        for no_version_of_ours in [
            "\"x,y\"",
            "null",
            "3",
            "\"3",
            "\"3\",",
            "\"3\" \"4\"",
            "\"a\"b\"",
            "*, \"3\"",
        ] {
            let status = asked(no_version_of_ours).unwrap_err().status();
            assert_eq!(
                status,
                StatusCode::PRECONDITION_FAILED,
                "{no_version_of_ours}"
            );
        }
        let mut two = HeaderMap::new();
        two.append(IF_MATCH, HeaderValue::from_static("\"x\""));
        two.append(IF_MATCH, HeaderValue::from_static("\"7\""));
        assert_eq!(if_match(&two).unwrap(), Some(7));
    }
}
