//! `cargo run --bin dev-token [user-uuid]`: prints a Supabase-shaped access token signed with
//! `SUPABASE_JWT_SECRET` (HS256) for `SUPABASE_URL`, valid one hour, for local requests.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use shared::auth::{SUPABASE_JWT_SECRET, SUPABASE_URL};
use shared::config::Env;

fn main() -> ExitCode {
    let env = Env::from_process();
    let (Some(url), Some(secret)) = (env.text(&SUPABASE_URL), env.text(&SUPABASE_JWT_SECRET)) else {
        eprintln!("dev-token: SUPABASE_URL and SUPABASE_JWT_SECRET must be set");
        return ExitCode::from(2);
    };
    let user = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "5b1c7a2e-8f6d-4c3b-9a1e-2d4f6b8c0e13".into());
    if uuid::Uuid::parse_str(&user).is_err() {
        eprintln!("dev-token: the user id must be a UUID");
        return ExitCode::from(2);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "iss": format!("{}/auth/v1", url.trim_end_matches('/')),
        "sub": user, "aud": "authenticated", "role": "authenticated",
        "iat": now, "exp": now + 3600,
    });
    match jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dev-token: {e}");
            ExitCode::FAILURE
        }
    }
}
