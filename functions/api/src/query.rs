//! Query strings of the read routes (they are not JSON): only the parameters a route knows, each
//! at most once, each parsed into its type; anything else is a 422 whose message names the
//! parameter.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use lambda_http::{Request, RequestExt};
use uuid::Uuid;

use shared::http::ApiError;

use crate::cursor::{self, Cursor, PageRequest};
use crate::settings::Settings;

/// Longest unknown parameter name shown in a message.
const MAX_NAME_CHARS: usize = 64;

/// The parameters of one request, checked against the names a route accepts.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn of(request: &Request, known: &[&str]) -> Result<Query, ApiError> {
        let params = request.query_string_parameters();
        let mut map = HashMap::new();
        for (name, _) in params.iter() {
            if !known.contains(&name) {
                let shown: String = name.chars().take(MAX_NAME_CHARS).collect();
                return Err(ApiError::Unprocessable(format!(
                    "unknown query parameter `{shown}`; expected {}",
                    known.join(", ")
                )));
            }
            let values = params.all(name).unwrap_or_default();
            if values.len() > 1 {
                return Err(ApiError::Unprocessable(format!("{name} is given more than once")));
            }
            if let Some(value) = values.first() {
                map.insert(name.to_string(), (*value).to_string());
            }
        }
        Ok(Query(map))
    }

    /// Parameter `name`; an empty value is an absent one.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A whole number from `min` to `max`: `{name} must be a whole number from {min} to {max}`
    /// otherwise.
    pub fn number<T: FromStr + PartialOrd + Display + Copy>(
        &self,
        name: &str,
        min: T,
        max: T,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|text| {
                text.parse::<T>()
                    .ok()
                    .filter(|n| (&min..=&max).contains(&n))
                    .ok_or_else(|| {
                        ApiError::Unprocessable(format!("{name} must be a whole number from {min} to {max}"))
                    })
            })
            .transpose()
    }

    /// The page asked for: [`cursor::PARAMETER`] (a cursor from a previous page), then `limit`
    /// (the page size, 1..=the maximum; the default when absent).
    pub fn page(&self, settings: &Settings) -> Result<PageRequest, ApiError> {
        let before = self.get(cursor::PARAMETER).map(Cursor::decode).transpose()?;
        let limit = self.number("limit", 1, settings.max_page_size)?;
        Ok(PageRequest {
            before,
            limit: limit.unwrap_or(settings.page_size),
        })
    }

    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.get(name)
            .map(|text| Uuid::parse_str(text).map_err(|_| ApiError::Unprocessable(format!("{name} must be a UUID"))))
            .transpose()
    }

    /// One of `allowed`, known by its `label`; the labels are named in the error.
    pub fn choice<T: Copy>(
        &self,
        name: &str,
        allowed: &[T],
        label: fn(T) -> &'static str,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|text| {
                allowed.iter().copied().find(|a| label(*a) == text).ok_or_else(|| {
                    let labels: Vec<&str> = allowed.iter().map(|a| label(*a)).collect();
                    ApiError::Unprocessable(format!("{name} must be one of {}", labels.join(", ")))
                })
            })
            .transpose()
    }
}
