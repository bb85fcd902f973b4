//! The OpenAPI document: generated from the handlers' annotations, then completed with the
//! answers every operation of a kind gives (a token refused, a body that is not JSON), so
//! that each operation lists every status it can answer, and every error is documented as
//! the `application/problem+json` it is. The schemas of validated values (free text, SKUs,
//! currencies, email addresses) come from the same code that validates them.

use std::sync::LazyLock;

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{AnyOfBuilder, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Content, HeaderBuilder, KnownFormat, Ref, RefOr, ResponseBuilder, SchemaFormat,
};
use utoipa::{Modify, OpenApi};

use crate::domain::{Currency, Email, Sku, text};
use crate::error::PROBLEM_JSON;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tidings",
        description = "A real-time commerce backend. Every error is application/problem+json \
                       (the Problem schema) with a stable `code`; a 422 `validation_failed` \
                       lists each failing field in `errors`. Each operation lists the statuses \
                       it answers; besides those, any request may get a 400 for a malformed \
                       request head (no valid Host, two Authorization headers), a 408 when it \
                       takes too long, and a 500 when the server fails.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and tokens"),
        (name = "me", description = "The caller's own account"),
        (name = "users", description = "User administration (admin)"),
        (name = "products", description = "The catalog and its stock"),
        (name = "orders", description = "Orders"),
        (name = "notifications", description = "Notifications and their preferences"),
        (name = "push", description = "Web Push: the server's VAPID key"),
        (name = "admin", description = "The audit log and the delivery log (admin)"),
        (name = "live", description = "Live events over WebSocket and Server-Sent Events"),
        (name = "health", description = "Liveness and readiness"),
    ),
    components(schemas(crate::error::ProblemDoc, crate::error::FieldError))
)]
pub struct ApiDoc;

/// The `bearer` security scheme the handlers refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from /v1/auth/login or /v1/auth/refresh",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds to every operation of the finished document (the routers' paths merged) the
/// statuses that follow from its shape, and serves every error response as problem+json.
pub fn complete(openapi: &mut utoipa::openapi::OpenApi) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if let Some(read) = item.get.as_mut().filter(|_| positioned(path)) {
            document_position(read);
        }
        for operation in operations(item) {
            complete_operation(operation);
        }
    }
}

/// The resources whose every read answers with `Tidings-Position` (see
/// [`crate::http::position`]): those that live events describe.
const POSITIONED: [&str; 3] = ["/v1/products", "/v1/orders", "/v1/notifications"];

fn positioned(path: &str) -> bool {
    POSITIONED.iter().any(|resource| {
        path.strip_prefix(resource)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The `Tidings-Position` header on a read's answers with a body or a 304.
fn document_position(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        if let (RefOr::T(response), "200" | "304") = (response, status.as_str()) {
            response.headers.insert(
                crate::http::position::HEADER.to_string(),
                RefOr::T(position_header()),
            );
        }
    }
}

fn position_header() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0)),
        ))
        .description(Some(
            "The stream position this answer reflects: every event with a seq up to it is \
             already in the body. Subscribe with `since` (WebSocket) or `Last-Event-ID` (SSE) \
             set to it to miss no later change; an event after it may repeat what the body \
             shows, with a `version` the body already has.",
        ))
        .build()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

fn complete_operation(operation: &mut Operation) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let body = operation.request_body.is_some();
    let query = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Query));
    let mut common = Vec::new();
    if body {
        common.extend([
            ("400", "The body is not JSON"),
            ("413", "The body is larger than the server takes"),
            ("415", "The body is not sent as application/json in UTF-8"),
            (
                "422",
                "Invalid fields: missing, of the wrong type, or out of their range",
            ),
        ]);
    }
    if query {
        common.push(("400", "A query parameter of the wrong type"));
    }
    if authenticated {
        common.push(("401", "No valid access token"));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in common {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if status.as_str() < "400" {
            continue;
        }
        if status == "401" {
            response
                .headers
                .entry("www-authenticate".to_owned())
                .or_insert_with(|| RefOr::T(www_authenticate()));
        }
        // Annotations say `body = ProblemDoc`, which utoipa files under application/json.
        if let Some(RefOr::T(content)) = response.content.get("application/json")
            && matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == problem_ref().ref_location)
        {
            let content = response.content.shift_remove("application/json");
            if let Some(content) = content {
                response.content.insert(PROBLEM_JSON.to_owned(), content);
            }
        }
    }
}

fn problem_ref() -> Ref {
    Ref::from_schema_name("Problem")
}

/// The challenge every 401 carries.
fn www_authenticate() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["Bearer"])),
        ))
        .build()
}

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    let response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, Content::new(Some(problem_ref())));
    RefOr::T(response.build())
}

/// A SKU, as [`Sku::parse`] takes it.
pub fn sku() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(Sku::PATTERN))
        .description(Some(
            "1 to 64 letters, digits, `-`, `_` and `.`; stored upper case and unique, \
             case-insensitively",
        ))
        .build()
}

/// A currency, as [`Currency::parse`] takes it.
pub fn currency() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Currency::codes().iter().copied()))
        .description(Some(
            "An ISO 4217 code in upper case, of a currency in circulation: not a fund (BOV, \
             USN, ...), special (XAU, XDR, XTS, XXX, ...) or superseded (HRK, ...) code",
        ))
        .build()
}

/// An email address of a new account, as [`Email::parse`] takes it.
pub fn email() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(Email::MAX_LEN))
        .pattern(Some(Email::pattern()))
        .description(Some(
            "An address in ASCII: a dot-atom local part and a domain of at least two labels \
             (surrounding whitespace is trimmed); unique, case-insensitively",
        ))
        .build()
}

/// Free text of at most `MAX` characters, as [`text::check`] takes it; `REQUIRED` text
/// holds something other than whitespace.
pub fn text<const MAX: usize, const REQUIRED: bool>() -> Object {
    let required = if REQUIRED { "; not blank" } else { "" };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(REQUIRED.then_some(1))
        .max_length(Some(MAX))
        .pattern(Some(text::pattern(REQUIRED)))
        .description(Some(format!(
            "At most {MAX} characters (surrounding whitespace is trimmed when stored){required}; \
             no control characters but tabs and line breaks, and no invisible format \
             characters (Unicode category Cf: bidi overrides, zero-width spaces, U+FEFF, ...)"
        )))
        .build()
}

/// A list cursor: the `next` of a page, base64url.
pub fn cursor() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9_-]*$"))
        .description(Some(
            "The `next` of the previous page, as it was; any other value is a 422",
        ))
        .build()
}

/// A stock adjustment: non-zero, at most `max` either way.
pub fn delta(max: i64) -> Schema {
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    AnyOfBuilder::new()
        .item(range(-max, -1))
        .item(range(1, max))
        .description(Some(format!(
            "Units to add (positive) or take (negative): not 0, at most {max} either way"
        )))
        .build()
        .into()
}

/// An `If-Match` value, as [`crate::http::etag::if_match`] reads it.
fn if_match() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(crate::http::etag::IF_MATCH_PATTERN))
        .examples(["\"1\""])
        .build()
}

/// The `If-Match` header of a conditional change.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    /// The ETag the change is based on, or `*`.
    #[param(rename = "if-match", schema_with = if_match)]
    _if_match: Option<String>,
}

/// A new account, as `POST /v1/auth/register` checks it (the handler reads any two
/// strings, and refuses what this does not describe with a 422).
#[derive(utoipa::ToSchema)]
pub struct NewAccount {
    #[schema(schema_with = email)]
    pub email: String,
    #[schema(schema_with = new_password)]
    pub password: String,
}

/// The most common passwords, which [`crate::domain::NewPassword`] refuses.
const COMMON_PASSWORDS: &str = include_str!("../domain/common_passwords.txt");

/// A new password, as [`crate::domain::NewPassword::parse`] takes it: 8 to 128 characters
/// and, in any case, none of the most common passwords (a negative lookahead). That it is
/// not the account's email address no schema can say.
pub fn new_password() -> Object {
    static PATTERN: LazyLock<String> = LazyLock::new(|| {
        let words: Vec<String> = COMMON_PASSWORDS.lines().map(any_case).collect();
        format!("^(?!(?:{})$)", words.join("|"))
    });
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(8))
        .max_length(Some(128))
        .pattern(Some(PATTERN.as_str()))
        .description(Some(
            "8 to 128 characters, counted with leading and trailing whitespace dropped and \
             each run of whitespace inside as one; not the email address, nor one of the most \
             common passwords in any case",
        ))
        .build()
}

/// A regex matching `word` in any case, as `to_lowercase` compares: each letter stands for
/// every character that lower-cases to it (`k` for the Kelvin sign too).
fn any_case(word: &str) -> String {
    static CASES: LazyLock<Vec<(char, String)>> = LazyLock::new(|| {
        let mut cases: Vec<(char, String)> = Vec::new();
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let mut lower = c.to_lowercase();
            if let (Some(l), None) = (lower.next(), lower.next())
                && l != c
            {
                match cases.iter_mut().find(|(k, _)| *k == l) {
                    Some((_, others)) => others.push(c),
                    None => cases.push((l, c.to_string())),
                }
            }
        }
        cases
    });
    word.chars()
        .map(|c| match CASES.iter().find(|(l, _)| *l == c) {
            Some((_, others)) => format!("[{c}{others}]"),
            None if "^$\\.*+?()[]{}|/".contains(c) => format!("\\{c}"),
            None => c.to_string(),
        })
        .collect()
}
