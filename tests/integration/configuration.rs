//! The declared configuration is the documented one: the README's tables are rendered from the
//! declarations, every name is declared once, and no product code reads the environment but the
//! one reader.

use std::path::{Path, PathBuf};

use shared::config::{markdown_table, Setting};

const BEGIN: &str = "<!-- settings:begin (generated from the declarations; UPDATE_README=1 cargo test -p integration-tests configuration rewrites it) -->";
const END: &str = "<!-- settings:end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every group of settings, as the README shows them.
fn groups() -> Vec<(&'static str, Vec<&'static Setting>)> {
    let all = |s: &[&'static Setting]| s.to_vec();
    vec![
        (
            "Database (every function; `migrate` reads only `DIRECT_URL`, `AGENT_BACKEND_PASSWORD` and `AGENT_MONITOR_PASSWORD`)",
            [shared::db::settings::SETTINGS, shared::db::migrate::SETTINGS].concat(),
        ),
        ("Secrets at run time (every function)", all(shared::secrets::SETTINGS)),
        (
            "Logs, metrics and shutdown (every function)",
            [
                shared::telemetry::SETTINGS,
                shared::metrics::SETTINGS,
                shared::lifecycle::SETTINGS,
            ]
            .concat(),
        ),
        ("Supabase auth (`chat`, `api`, `live`)", all(shared::auth::SETTINGS)),
        ("Model (`chat`, `scheduler`)", all(shared::model::SETTINGS)),
        ("Token budgets (`chat`, `scheduler`, `api`)", all(shared::usage::SETTINGS)),
        (
            "Agents and tools (`api` checks a tool's or a tool source's URL when it is saved and seals a source's auth header; `scheduler` runs agents with tools)",
            all(shared::agent::settings::SETTINGS),
        ),
        ("`chat`", all(chat::settings::SETTINGS)),
        ("`api`", all(api::settings::SETTINGS)),
        ("`health`", all(health::settings::SETTINGS)),
        ("`scheduler`", all(scheduler::settings::SETTINGS)),
        (
            "Live updates: publishing (`chat`, `chat-stream`, `api`, `scheduler`)",
            all(shared::live::SETTINGS),
        ),
        ("`live`", all(live::settings::SETTINGS)),
    ]
}

fn rendered() -> String {
    let mut out = format!("{BEGIN}\n");
    for (title, settings) in groups() {
        out.push_str(&format!("\n**{title}**\n\n"));
        out.push_str(&markdown_table(&settings));
    }
    out.push('\n');
    out.push_str(END);
    out
}

#[test]
fn readme_configuration_tables_match_the_declarations() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no generated settings section ({BEGIN} … {END})");
    };
    let current = &readme[start..end + END.len()];
    let expected = rendered();
    if current != expected {
        if std::env::var("UPDATE_README").is_ok_and(|v| v == "1") {
            let updated = format!("{}{expected}{}", &readme[..start], &readme[end + END.len()..]);
            std::fs::write(&path, updated).expect("write README.md");
        } else {
            panic!(
                "README.md's settings tables differ from the declarations; run \
                 UPDATE_README=1 cargo test -p integration-tests configuration. Expected:\n{expected}"
            );
        }
    }
}

#[test]
fn every_setting_is_declared_once() {
    let mut names: Vec<&str> = groups()
        .iter()
        .flat_map(|(_, settings)| settings.iter().map(|s| s.name))
        .collect();
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "a setting is declared twice");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_configuration_reader_reads_the_environment() {
    let mut files = Vec::new();
    rust_files(&root().join("shared/src"), &mut files);
    for function in ["api", "chat", "health", "live", "scheduler"] {
        rust_files(&root().join("functions").join(function).join("src"), &mut files);
    }
    assert!(files.len() > 20, "the product's sources were found");
    let readers: Vec<String> = files
        .iter()
        .filter(|p| !p.ends_with("shared/src/config/env.rs"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            ["std::env::var", "env::vars(", "env::var("]
                .iter()
                .any(|needle| text.contains(needle))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(readers.is_empty(), "these read the environment directly: {readers:?}");
}
