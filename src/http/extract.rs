//! Extractors whose rejections are problems in our shape: a body that does not fit its
//! type is a 422 `validation_failed` naming the field, like any other invalid field,
//! rather than serde's sentence.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use crate::error::FieldError;
use crate::http::problem::{ApiError, ApiResult};

/// A header sent more than once where once is the most that makes sense: which of them
/// would count is anyone's guess, a proxy's included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// The value of a header a request may send at most once, if it sent it.
pub fn at_most_one(
    headers: &axum::http::HeaderMap,
    name: impl axum::http::header::AsHeaderName,
) -> Result<Option<&axum::http::HeaderValue>, Repeated> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(Repeated),
    }
}

/// A JSON body (or response). The body must be sent as `application/json` (or a
/// `+json` type) in UTF-8, the only encoding JSON has (RFC 8259); it is then read as `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> ApiResult<Self> {
        require_json(request.headers())?;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let code = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                    _ => "unreadable_body",
                };
                ApiError::new(rejection.status(), code, rejection.body_text())
            })?;
        // Every body is an object; serde would also read a struct from an array, by position.
        if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
            && *first == b'['
        {
            return Err(ApiError::validation(vec![FieldError::new(
                ".",
                "invalid_type",
                "invalid type: sequence, expected an object",
            )]));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|e| json_error(&e.path().to_string(), e.inner()))?;
        deserializer.end().map_err(|e| json_error(".", &e))?;
        Ok(Json(value))
    }
}

/// Reads JSON already taken from a body as `T`, failing as [`Json`] does.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| json_error(&e.path().to_string(), e.inner()))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let unsupported = |detail: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            detail,
        )
    };
    let content_type = at_most_one(headers, header::CONTENT_TYPE)
        .map_err(|Repeated| {
            ApiError::bad_request("ambiguous_content_type", "send one Content-Type header")
        })?
        .ok_or_else(|| unsupported("send the body as Content-Type: application/json"))?;
    let mime: mime::Mime = content_type
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| unsupported("the Content-Type header is not a media type"))?;
    let json = mime.type_() == mime::APPLICATION
        && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON));
    if !json {
        return Err(unsupported(
            "send the body as Content-Type: application/json",
        ));
    }
    if mime
        .get_param(mime::CHARSET)
        .is_some_and(|charset| !charset.as_str().eq_ignore_ascii_case("utf-8"))
    {
        return Err(unsupported("JSON is read in UTF-8 only"));
    }
    Ok(())
}

/// Syntax is a 400; JSON of the wrong shape is a 422 naming the field.
fn json_error(path: &str, error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => ApiError::validation(vec![field_error(path, &error.to_string())]),
        Category::Io | Category::Syntax | Category::Eof => {
            ApiError::bad_request("malformed_json", format!("the body is not JSON: {error}"))
        }
    }
}

/// The field error of a serde message at `path` (`.` for the document itself); a missing
/// field is named in the message rather than the path, which stops at its parent.
fn field_error(path: &str, message: &str) -> FieldError {
    // serde_json appends the position, which means nothing once the field is named.
    let message = message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at]);
    let named = |prefix: &str| {
        message.strip_prefix(prefix).and_then(|rest| {
            let name = &rest[..rest.find('`')?];
            Some(match path {
                "." => name.to_owned(),
                // The path of an unknown field already ends with it.
                path if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
                parent => format!("{parent}.{name}"),
            })
        })
    };
    if let Some(field) = named("missing field `") {
        return FieldError::new(field, "required", "is required");
    }
    if let Some(field) = named("unknown field `") {
        let expected = message
            .split_once(", expected ")
            .map_or(String::new(), |(_, e)| format!("; expected {e}"));
        return FieldError::new(
            field,
            "unknown_field",
            format!("is not a field here{expected}"),
        );
    }
    // Type names are ours, not the client's: `expected struct CreateProduct` is an object.
    let message = match message.find("expected struct ") {
        Some(at) => format!("{}expected an object", &message[..at]),
        None if message.starts_with("data did not match any variant") => {
            "is none of the forms this field takes".to_owned()
        }
        None => message.to_owned(),
    };
    let code = if message.starts_with("invalid type") {
        "invalid_type"
    } else {
        "invalid"
    };
    FieldError::new(path, code, message)
}

/// A query string, read as `T`; a parameter of the wrong type is a 400 `invalid_query`
/// naming it (a value of the right type out of its range is the handler's 422).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let path = error.path().to_string();
                ApiError::Problem {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_query",
                    detail: format!("the query string does not fit: {error}"),
                    errors: vec![field_error(&path, &error.inner().to_string())],
                    retry_after: None,
                }
            })
    }
}

/// Path parameters.
#[derive(Debug, Clone, Copy, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `deserialize_with` for an integer field: JSON Schema's `integer` is any number without
/// a fraction, `517.0` included, so the API takes it as 517.
pub fn whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_i64(Whole)
}

/// [`whole`] for an optional field (with `#[serde(default)]`); `null` is not a value.
pub fn whole_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    whole(deserializer).map(Some)
}

/// `deserialize_with` for an optional field whose absence means "unchanged" and for which
/// `null` is not a value (with `#[serde(default)]`).
pub fn present<'de, D: Deserializer<'de>, T: serde::Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

struct Whole;

impl Visitor<'_> for Whole {
    type Value = i64;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // i64::MAX as f64 rounds up to 2^63, itself out of range.
        if v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64 {
            Ok(v as i64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_field_is_named_with_its_parent() {
        let error = field_error("items[0]", "missing field `quantity` at line 1 column 30");
        assert_eq!(error.field, "items[0].quantity");
        assert_eq!(error.code, "required");
        let top = field_error(".", "missing field `reason` at line 1 column 11");
        assert_eq!((top.field.as_str(), top.code), ("reason", "required"));
    }

    #[test]
    fn a_wrong_type_names_the_field_but_not_our_types() {
        let error = field_error(
            "delta",
            "invalid type: string \"x\", expected an integer at line 1 column 12",
        );
        assert_eq!(
            (error.field.as_str(), error.code),
            ("delta", "invalid_type")
        );
        assert_eq!(
            error.message,
            "invalid type: string \"x\", expected an integer"
        );
        let body = field_error(".", "invalid type: sequence, expected struct NewOrder");
        assert_eq!(body.message, "invalid type: sequence, expected an object");
    }

    #[test]
    fn whole_numbers_are_integers_and_fractions_are_not() {
        let parse = |json: &str| whole(&mut serde_json::Deserializer::from_str(json));
        assert_eq!(parse("517").unwrap(), 517);
        assert_eq!(parse("517.0").unwrap(), 517);
        assert_eq!(parse("-2e3").unwrap(), -2000);
        for bad in ["517.5", "\"517\"", "9223372036854775808", "1e300", "true"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
