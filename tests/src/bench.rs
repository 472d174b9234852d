//! What the benchmarks' simulated Lambda instances share: one Supabase project stand-in (its
//! legacy JWT secret and URL), access tokens for it, and a chat instance as the benchmarks build
//! it (no rate limit in the way of the load, metrics kept quiet).

use chat::{Chat, Settings as ChatSettings};
use shared::auth::{AuthConfig, Authenticator};
use shared::db::Db;
use shared::model::SharedModel;

use crate::fakes;
use crate::harness::quiet_metrics;

pub const SECRET: &str = "bench-jwt-secret-with-at-least-32-characters!";
pub const SUPABASE: &str = "https://bench.supabase.co";

/// An access token of `user` for the stand-in project.
pub fn token(user: &str) -> String {
    fakes::hs256(SECRET, &fakes::claims(&format!("{SUPABASE}/auth/v1"), user))
}

/// A chat instance on `db` answering with `model`.
pub fn chat_instance(db: Db, model: SharedModel) -> Chat {
    Chat {
        live: shared::live::Publisher::off(),
        db,
        auth: Authenticator::new(AuthConfig::new(SUPABASE, Some(SECRET.into())))
            .expect("an HTTP client with its timeouts"),
        model,
        settings: ChatSettings {
            rate_limit: 1_000_000,
            ..ChatSettings::default()
        },
        metrics: quiet_metrics("chat"),
    }
}
