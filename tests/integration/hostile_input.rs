//! Property tests: the chat, task and tool-source request parsers, page cursors and the scheduler's manual
//! payload parser never panic and answer every input with a client error or a valid result
//! (never a 5xx); a 422 names what it refuses. Bounded runs (`PROPTEST_CASES`, default 512 here)
//! so CI stays fast.

use api::cursor::Cursor;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chat::request;
use chrono::DateTime;
use proptest::prelude::*;
use scheduler::Trigger;
use serde_json::Value;
use uuid::Uuid;

/// The fields of a chat body and of a task body.
const CHAT_FIELDS: [&str; 3] = ["agentId", "message", "conversationId"];
const TASK_FIELDS: [&str; 7] = [
    "agentId",
    "prompt",
    "scheduledFor",
    "cron",
    "timeZone",
    "maxAttempts",
    "approved",
];

/// The fields of a tool-source body.
const SOURCE_FIELDS: [&str; 1] = ["sources"];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("00000000-0000-4000-8000-000000000001".into())),
        Just(Value::String("*/5 * * * *".into())),
        Just(Value::String("Europe/Paris".into())),
        Just(Value::String("2026-12-01T09:00:00Z".into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("agentId".to_string()),
                    Just("message".to_string()),
                    Just("conversationId".to_string()),
                    Just("maxTasks".to_string()),
                    Just("dryRun".to_string()),
                    Just("prompt".to_string()),
                    Just("scheduledFor".to_string()),
                    Just("cron".to_string()),
                    Just("timeZone".to_string()),
                    Just("maxAttempts".to_string()),
                    Just("approved".to_string()),
                    ".{0,12}".prop_map(String::from),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether a 422's `message` names what it refuses: one of the body's `fields`, a field the body
/// should not have, or the body as a whole.
fn names_a_field(message: &str, fields: &[&str]) -> bool {
    message.starts_with("unknown field `")
        || message.starts_with("the body")
        || fields
            .iter()
            .any(|f| message.strip_prefix(f).is_some_and(|rest| rest.starts_with([' ', ':'])))
}

/// The first and last microsecond a page can start from: 1970-01-01 to the end of 9999.
const FIRST_MICROS: i64 = 0;
const LAST_MICROS: i64 = 253_402_300_799_999_999;

/// A cursor as the API hands them out: any time a page can start from, any id.
fn valid_cursor() -> impl Strategy<Value = Cursor> {
    (FIRST_MICROS..=LAST_MICROS, any::<u128>()).prop_map(|(micros, id)| Cursor {
        at: DateTime::from_timestamp_micros(micros).expect("within chrono's range"),
        id: Uuid::from_u128(id),
    })
}

/// A cursor's text and the cursor it must decode to, or `None` where it must be refused: a third
/// of the cases encoded by the API's own encoding, the rest one of them spoilt in one way: cut
/// short, a character outside base64url, too long, or well encoded around a time outside
/// 1970..=9999, a time that is not a number, an id that is not a UUID, no separator, bytes that
/// are not UTF-8.
fn cursor_case() -> impl Strategy<Value = (String, Option<Cursor>)> {
    let encoded = |raw: String| URL_SAFE_NO_PAD.encode(raw);
    prop_oneof![
        4 => valid_cursor().prop_map(|c| (c.encode(), Some(c))),
        1 => (valid_cursor(), any::<prop::sample::Index>())
            .prop_map(|(c, cut)| { let text = c.encode(); (text[..cut.index(text.len())].to_string(), None) }),
        1 => (valid_cursor(), any::<prop::sample::Index>(), prop::sample::select(vec!['!', '=', '+', '/', ' ', '%', '.']))
            .prop_map(|(c, at, bad)| {
                let mut text = c.encode();
                text.insert(at.index(text.len() + 1), bad);
                (text, None)
            }),
        1 => (valid_cursor(), 1usize..100).prop_map(|(c, extra)| {
            let text = c.encode();
            let padding = "A".repeat(129 - text.len() + extra);
            (text + &padding, None)
        }),
        1 => (prop_oneof![i64::MIN..FIRST_MICROS, LAST_MICROS + 1..=i64::MAX], any::<u128>())
            .prop_map(move |(micros, id)| (encoded(format!("{micros}.{}", Uuid::from_u128(id))), None)),
        1 => ("[a-zA-Z_ ]{0,12}", any::<u128>())
            .prop_map(move |(time, id)| (encoded(format!("{time}.{}", Uuid::from_u128(id))), None)),
        1 => (valid_cursor(), 0usize..36, prop::sample::select(vec!['g', 'x', 'Z', '!', '.', ' ']))
            .prop_map(move |(c, at, bad)| {
                let mut id: Vec<char> = c.id.to_string().chars().collect();
                id[at] = bad;
                let id: String = id.into_iter().collect();
                (encoded(format!("{}.{id}", c.at.timestamp_micros())), None)
            }),
        1 => valid_cursor().prop_map(move |c| (encoded(format!("{}{}", c.at.timestamp_micros(), c.id)), None)),
        1 => (valid_cursor(), any::<prop::sample::Index>()).prop_map(|(c, at)| {
            let mut raw = format!("{}.{}", c.at.timestamp_micros(), c.id).into_bytes();
            raw.insert(at.index(raw.len() + 1), 0xff);
            (URL_SAFE_NO_PAD.encode(raw), None)
        }),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chat_bodies_of_any_bytes_get_a_4xx_or_parse(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = request::parse(&bytes, 4000) {
            let status = e.parts().0.as_u16();
            prop_assert!((400..500).contains(&status), "{} for {:?}", status, bytes);
            prop_assert!(status != 422 || names_a_field(&e.to_string(), &CHAT_FIELDS), "{e} for {bytes:?}");
        }
    }

    #[test]
    fn chat_bodies_of_any_json_get_a_4xx_or_parse(value in json_value(), max in 1usize..5000) {
        let body = value.to_string();
        match request::parse(body.as_bytes(), max) {
            Ok(input) => {
                prop_assert!(!input.message.is_empty());
                prop_assert!(input.message.chars().count() <= max);
                prop_assert!(!input.message.contains('\0'));
            }
            Err(e) => {
                let status = e.parts().0.as_u16();
                prop_assert!((400..500).contains(&status), "{} for {}", status, body);
                prop_assert!(status != 422 || names_a_field(&e.to_string(), &CHAT_FIELDS), "{e} for {body}");
            }
        }
    }

    #[test]
    fn scheduler_payloads_of_any_json_are_a_trigger_or_a_clear_error(value in json_value()) {
        match Trigger::parse(&value) {
            Ok(t) => prop_assert!(t.max_tasks.is_none_or(|n| n >= 1)),
            Err(e) => prop_assert!(e.to_string().starts_with("invalid scheduler payload")),
        }
    }

    #[test]
    fn idempotency_keys_of_any_bytes_are_accepted_or_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match shared::http::idempotency_key_of(Some(&bytes)) {
            Ok(Some(k)) => prop_assert!(k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic())),
            Ok(None) => prop_assert!(false, "a present header is never None"),
            Err(e) => prop_assert_eq!(e.parts().0.as_u16(), 400),
        }
    }

    #[test]
    fn task_bodies_of_any_json_are_a_task_or_a_client_error(value in json_value()) {
        let body = value.to_string();
        match api::tasks::parse(body.as_bytes(), &api::Settings::default(), chrono::Utc::now()) {
            Ok(task) => prop_assert!(!task.prompt.is_empty() && (1..=10).contains(&task.max_attempts)),
            Err(e) => {
                let status = e.parts().0.as_u16();
                prop_assert!((400..500).contains(&status), "{status}: {e}");
                prop_assert!(status != 422 || names_a_field(&e.to_string(), &TASK_FIELDS), "{e} for {body}");
            }
        }
    }

    #[test]
    fn tool_source_bodies_of_any_json_are_a_list_or_a_client_error_never_showing_a_header(
        value in json_value(),
        header in "[ -~]{0,40}",
    ) {
        // Any JSON as the body, and any printable header in an otherwise valid source.
        let key = shared::agent::sealed::SealKey::from_hex(&"ab".repeat(32)).unwrap();
        let policy = api::Settings::default().tool_policy;
        let with_header = serde_json::json!({"sources": [
            {"name": "s", "url": "https://mcp.example.com/", "authHeader": format!("{header}SECRETPART")}
        ]});
        for body in [value.to_string(), with_header.to_string()] {
            match api::tool_sources::parse(body.as_bytes(), &policy, Some(&key), Uuid::nil()) {
                Ok(sources) => prop_assert!(sources.len() <= api::tool_sources::MAX_SOURCES),
                Err(e) => {
                    let status = e.parts().0.as_u16();
                    let message = e.to_string();
                    prop_assert!((400..500).contains(&status), "{status}: {e}");
                    let named = names_a_field(&message, &SOURCE_FIELDS) || message.starts_with("sources[");
                    prop_assert!(status != 422 || named, "{e} for {body}");
                    prop_assert!(!message.contains("SECRETPART"), "{message}");
                }
            }
        }
    }

    #[test]
    fn cursors_of_any_text_decode_or_are_a_422_naming_before(text in ".{0,200}") {
        if let Err(e) = Cursor::decode(&text) {
            prop_assert_eq!(e.parts().0.as_u16(), 422);
            prop_assert!(e.to_string().starts_with("before "), "{e}");
        }
    }

    #[test]
    fn cursors_the_api_encodes_decode_to_themselves_and_any_spoilt_one_is_a_422_naming_before(
        (text, expected) in cursor_case()
    ) {
        match (Cursor::decode(&text), expected) {
            (Ok(cursor), Some(expected)) => prop_assert_eq!(cursor, expected),
            (Err(e), None) => {
                prop_assert_eq!(e.parts().0.as_u16(), 422);
                prop_assert!(e.to_string().starts_with("before "), "{e}");
            }
            (got, expected) => prop_assert!(false, "{text:?}: {got:?}, expected {expected:?}"),
        }
    }
}
