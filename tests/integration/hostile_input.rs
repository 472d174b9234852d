//! Property tests: the chat and task request parsers, page cursors and the scheduler's manual
//! payload parser never panic and answer every input with a client error or a valid result (never a 5xx). Bounded runs
//! (`PROPTEST_CASES`, default 512 here) so CI stays fast.

use chat::request;
use proptest::prelude::*;
use scheduler::Trigger;
use serde_json::Value;

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
            }
        }
    }

    #[test]
    fn cursors_of_any_text_decode_or_are_a_422(text in ".{0,200}") {
        if let Err(e) = api::cursor::Cursor::decode(&text) {
            prop_assert_eq!(e.parts().0.as_u16(), 422);
        }
    }
}
