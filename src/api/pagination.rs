//! One pagination shape for every list: `?limit=&cursor=` in, `{items, next}` out, where
//! `next` is an opaque cursor (the keyset position after the last item).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::http::problem::{ApiError, ApiResult};

/// Most items one page may hold.
pub const MAX_LIMIT: u32 = 100;
/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 50;

/// The query parameters of a list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 100; 50 when omitted.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(schema_with = super::openapi::cursor)]
    pub cursor: Option<String>,
}

/// A checked page request whose cursor decodes to `C`.
#[derive(Debug)]
pub struct PageRequest<C> {
    pub limit: u32,
    pub after: Option<C>,
}

impl PageParams {
    pub fn parse<C: DeserializeOwned>(&self) -> ApiResult<PageRequest<C>> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::validation(vec![FieldError::new(
                "limit",
                "out_of_range",
                format!("must be between 1 and {MAX_LIMIT}"),
            )]));
        }
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                ApiError::validation(vec![FieldError::new(
                    "cursor",
                    "invalid",
                    "is not a cursor this list returned",
                )])
            })?),
        };
        Ok(PageRequest { limit, after })
    }
}

impl<C> PageRequest<C> {
    /// The row count to fetch: one more than the page, to learn whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; null on the last one.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows; `key` gives the cursor of a row.
    pub fn from_rows<R, C: Serialize>(
        mut rows: Vec<R>,
        request: &PageRequest<impl Sized>,
        key: impl Fn(&R) -> C,
        view: impl Fn(R) -> T,
    ) -> Page<T> {
        let more = rows.len() > request.limit as usize;
        rows.truncate(request.limit as usize);
        let next = if more {
            rows.last().map(|r| encode_cursor(&key(r)))
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(view).collect(),
            next,
        }
    }
}

fn encode_cursor<C: Serialize>(key: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("cursor keys serialise"))
}

fn decode_cursor<C: DeserializeOwned>(cursor: &str) -> Option<C> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let request: PageRequest<(String, u32)> = PageParams {
            limit: Some(2),
            cursor: Some(encode_cursor(&("b".to_string(), 7))),
        }
        .parse()
        .unwrap();
        assert_eq!(request.after, Some(("b".to_string(), 7)));
        let bad = PageParams {
            limit: None,
            cursor: Some("%%%".into()),
        };
        assert!(bad.parse::<(String, u32)>().is_err());
        let too_many = PageParams {
            limit: Some(101),
            cursor: None,
        };
        assert!(too_many.parse::<u32>().is_err());
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_more_rows_follow() {
        let request = PageRequest::<u32> {
            limit: 2,
            after: None,
        };
        let page = Page::from_rows(vec![1u32, 2, 3], &request, |r| *r, |r| r);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(decode_cursor::<u32>(page.next.as_deref().unwrap()), Some(2));
        let last = Page::from_rows(vec![1u32, 2], &request, |r| *r, |r| r);
        assert!(last.next.is_none());
    }
}
