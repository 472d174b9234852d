//! `cargo run --release --bin migrate`: applies the schema over `DIRECT_URL` (idempotent).

use std::process::ExitCode;

use shared::config::Env;
use shared::db::DbSettings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let env = Env::from_process();
    let settings = match shared::telemetry::init(&env).and_then(|()| DbSettings::direct(&env, "migrate")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("migrate: {e}");
            return ExitCode::from(2);
        }
    };
    let functions = env.text(&shared::db::migrate::AGENT_BACKEND_PASSWORD);
    let monitor = env.text(&shared::db::migrate::AGENT_MONITOR_PASSWORD);
    let passwords = shared::db::migrate::Passwords {
        functions: functions.as_deref(),
        monitor: monitor.as_deref(),
    };
    match shared::db::migrate::run_with(&settings, passwords).await {
        Ok(report) if report.applied.is_empty() => {
            println!("migrate: schema is up to date ({})", settings.dbname);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            for m in &report.applied {
                println!("migrate: applied {m}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate: {}", shared::db::migrate::with_causes(&e));
            ExitCode::FAILURE
        }
    }
}
