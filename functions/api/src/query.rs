//! Query strings of the list routes: only the parameters a route knows, each at most once, each
//! checked; anything else is a 422 naming it.

use std::collections::HashMap;

use lambda_http::{Request, RequestExt};
use uuid::Uuid;

use shared::http::ApiError;

use crate::cursor::Cursor;
use crate::settings::Settings;

/// The parameters of one request, checked against the names a route accepts.
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn of(request: &Request, known: &[&str]) -> Result<Query, ApiError> {
        let params = request.query_string_parameters();
        let mut map = HashMap::new();
        for (name, _) in params.iter() {
            if !known.contains(&name) {
                let shown: String = name.chars().take(64).collect();
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

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// `limit`: the page size, 1..=the maximum (the default when absent).
    pub fn limit(&self, settings: &Settings) -> Result<i64, ApiError> {
        match self.get("limit") {
            None => Ok(settings.page_size),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=settings.max_page_size).contains(n))
                .ok_or_else(|| {
                    ApiError::Unprocessable(format!(
                        "limit must be a whole number from 1 to {}",
                        settings.max_page_size
                    ))
                }),
        }
    }

    /// `days` of `GET /api/usage`: 1..=90 (7 when absent).
    pub fn days(&self) -> Result<i32, ApiError> {
        match self.get("days") {
            None => Ok(crate::usage::DEFAULT_DAYS),
            Some(text) => text
                .parse::<i32>()
                .ok()
                .filter(|n| (1..=crate::usage::MAX_DAYS).contains(n))
                .ok_or_else(|| {
                    ApiError::Unprocessable(format!(
                        "days must be a whole number from 1 to {}",
                        crate::usage::MAX_DAYS
                    ))
                }),
        }
    }

    /// `before`: a cursor from a previous page.
    pub fn before(&self) -> Result<Option<Cursor>, ApiError> {
        self.get("before").map(Cursor::decode).transpose()
    }

    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.get(name)
            .map(|text| Uuid::parse_str(text).map_err(|_| ApiError::Unprocessable(format!("{name} must be a UUID"))))
            .transpose()
    }

    /// One of `allowed`, named in the error when it is not.
    pub fn choice(&self, name: &str, allowed: &[&'static str]) -> Result<Option<&'static str>, ApiError> {
        self.get(name)
            .map(|text| {
                allowed
                    .iter()
                    .copied()
                    .find(|a| *a == text)
                    .ok_or_else(|| ApiError::Unprocessable(format!("{name} must be one of {}", allowed.join(", "))))
            })
            .transpose()
    }
}
