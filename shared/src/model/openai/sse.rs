//! An OpenAI-compatible streamed reply read as it arrives: text deltas, tool-call deltas
//! assembled by their `index`, the usage chunk, `[DONE]`.

use serde_json::Value;

use super::super::{ModelError, ToolCall, Usage};
use super::wire::{short, usage_of};

/// The text of an OpenAI-compatible streamed reply (`stream: true`): Server-Sent Events whose
/// `data:` is a `chat.completion.chunk` (text in `choices[0].delta.content`) until `data: [DONE]`.
/// Fed bytes as they arrive; bounded in reply bytes (text and tool calls together) and in bytes
/// waiting for an event's end. With `stream_options.include_usage` the last chunk before
/// `[DONE]` has no choices and the reply's `usage`: kept in [`SseText::usage`]. Tool calls come
/// as `choices[0].delta.tool_calls[]`, each piece naming its call by `index` (the first piece
/// has the id and the name, the others add to the arguments): whole in
/// [`SseText::tool_calls`] once `[DONE]` came.
#[derive(Debug)]
pub struct SseText {
    buffer: Vec<u8>,
    reply_bytes: usize,
    max_reply_bytes: usize,
    /// `[DONE]` seen, or an error given: nothing more comes.
    pub finished: bool,
    /// `[DONE]` seen: the reply is whole.
    pub done: bool,
    /// The last well-formed `usage` a chunk carried (`None`: none yet, or the provider sends none).
    pub usage: Option<Usage>,
    /// The tool calls so far, by index: id, name, arguments text.
    calls: Vec<(String, String, String)>,
}

impl SseText {
    pub fn new(max_reply_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            reply_bytes: 0,
            max_reply_bytes,
            finished: false,
            done: false,
            usage: None,
            calls: Vec::new(),
        }
    }

    /// The tool calls the reply asked for (whole once [`SseText::done`]).
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.calls
            .iter()
            .map(|(id, name, arguments)| ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: ToolCall::arguments_of(arguments),
            })
            .collect()
    }

    /// Adds a chunk's `tool_calls` deltas; an error when the reply grows past its bound or a
    /// call is left without an id or a name.
    fn add_calls(&mut self, deltas: &[Value]) -> Result<(), ModelError> {
        for delta in deltas {
            let index = delta["index"]
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(self.calls.len().saturating_sub(1));
            // Indexes come in order, from 0: one more than the calls so far opens a call.
            if index > self.calls.len() || index >= 128 {
                return Err(ModelError::Failed("a streamed tool call skipped an index".into()));
            }
            if index == self.calls.len() {
                self.calls.push(Default::default());
            }
            let call = &mut self.calls[index];
            let parts = [
                (&mut call.0, delta["id"].as_str()),
                (&mut call.1, delta["function"]["name"].as_str()),
                (&mut call.2, delta["function"]["arguments"].as_str()),
            ];
            for (field, piece) in parts {
                if let Some(piece) = piece {
                    self.reply_bytes += piece.len();
                    field.push_str(piece);
                }
            }
            if self.reply_bytes > self.max_reply_bytes {
                return Err(ModelError::TooLarge(self.max_reply_bytes));
            }
        }
        Ok(())
    }

    /// The chunks (or the error) the bytes complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<String, ModelError>> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.buffer.extend_from_slice(bytes);
        while let Some((end, sep)) = event_end(&self.buffer) {
            let event: Vec<u8> = self.buffer.drain(..end + sep).collect();
            let event = String::from_utf8_lossy(&event[..end]).into_owned();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                if let Err(e) = self.data(data.trim(), &mut out) {
                    self.finished = true;
                    out.push(Err(e));
                    return out;
                }
                if self.finished {
                    return out;
                }
            }
        }
        // An event longer than any reply could be is not an event.
        if self.buffer.len() > self.max_reply_bytes * 2 + 16 * 1024 {
            self.finished = true;
            out.push(Err(ModelError::TooLarge(self.max_reply_bytes)));
        }
        out
    }

    /// One `data:` line: its text goes to `out`.
    fn data(&mut self, data: &str, out: &mut Vec<Result<String, ModelError>>) -> Result<(), ModelError> {
        if data == "[DONE]" {
            if self.calls.iter().any(|(id, name, _)| id.is_empty() || name.is_empty()) {
                return Err(ModelError::Failed("a streamed tool call has no id or no name".into()));
            }
            self.finished = true;
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            // A chunk we cannot read would lose its text silently: the stream fails.
            tracing::warn!(error = %crate::telemetry::Chain(&e), "a stream chunk is not JSON");
            ModelError::Failed("the stream sent a chunk that is not JSON".into())
        })?;
        if let Some(message) = chunk["error"]["message"].as_str() {
            return Err(ModelError::Failed(format!("the stream failed: {}", short(message))));
        }
        if let Some(usage) = usage_of(&chunk["usage"]) {
            self.usage = Some(usage);
        }
        let delta = &chunk["choices"][0]["delta"];
        if let Some(calls) = delta["tool_calls"].as_array() {
            self.add_calls(calls)?;
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.reply_bytes += text.len();
            if self.reply_bytes > self.max_reply_bytes {
                return Err(ModelError::TooLarge(self.max_reply_bytes));
            }
            out.push(Ok(text.to_string()));
        }
        Ok(())
    }
}

/// Where the first complete event ends: its length and the blank line's.
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(text: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]})
        )
    }

    #[test]
    fn streamed_chunks_are_read_across_arbitrary_byte_boundaries() {
        let wire = format!(
            ": keep-alive\n\n{}{}data: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\r\n\r\n{}data: [DONE]\n\n",
            chunk("Hel"),
            chunk("lo, "),
            chunk("wörld")
        );
        for step in [1, 3, 7, 64, wire.len()] {
            let mut sse = SseText::new(1024);
            let mut text = String::new();
            for piece in wire.as_bytes().chunks(step) {
                for item in sse.push(piece) {
                    text.push_str(&item.unwrap());
                }
            }
            assert_eq!(text, "Hello, wörld", "step {step}");
            assert!(sse.finished);
        }
    }

    #[test]
    fn a_stream_error_or_an_oversized_reply_ends_the_stream_with_an_error() {
        let mut sse = SseText::new(1024);
        let items = sse.push(b"data: {\"error\": {\"message\": \"overloaded\"}}\n\n");
        assert!(matches!(&items[..], [Err(ModelError::Failed(m))] if m.contains("overloaded")));
        let mut small = SseText::new(4);
        let items = small.push(chunk("far too long").as_bytes());
        assert_eq!(items, vec![Err(ModelError::TooLarge(4))]);
        let mut endless = SseText::new(4);
        let items = endless.push(&vec![b'x'; 20_000]);
        assert_eq!(items, vec![Err(ModelError::TooLarge(4))]);
    }

    #[test]
    fn the_usage_chunk_at_the_streams_end_is_read_and_chunks_without_usage_are_not_usage() {
        let text_chunk = |text: &str| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}], "usage": null})
            )
        };
        let last = json!({"object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}});
        let wire = format!(
            "{}{}data: {last}\n\ndata: [DONE]\n\n",
            text_chunk("Hi"),
            text_chunk(" there")
        );
        for step in [1, 5, wire.len()] {
            let mut sse = SseText::new(1024);
            let mut text = String::new();
            for piece in wire.as_bytes().chunks(step) {
                for item in sse.push(piece) {
                    text.push_str(&item.unwrap());
                }
            }
            assert_eq!(text, "Hi there", "step {step}");
            assert_eq!(
                sse.usage,
                Some(Usage {
                    input_tokens: 12,
                    output_tokens: 7
                }),
                "step {step}"
            );
        }
        let mut without = SseText::new(1024);
        without.push(format!("{}data: [DONE]\n\n", text_chunk("Hi")).as_bytes());
        assert!(without.finished);
        assert_eq!(without.usage, None, "no usage chunk: unknown, not 0");
    }
}

#[cfg(test)]
mod tool_call_tests {
    use super::*;
    use serde_json::json;

    fn delta(calls: &Value) -> String {
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
        )
    }

    #[test]
    fn streamed_tool_calls_are_assembled_by_index_across_chunks_and_byte_boundaries() {
        let wire = [
            delta(&json!([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}])),
            delta(&json!([{"index": 0, "function": {"arguments": "{\"ci"}}])),
            delta(&json!([{"index": 1, "id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}}])),
            delta(&json!([{"index": 0, "function": {"arguments": "ty\":\"Oslo\"}"}}])),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        for step in [1, 9, wire.len()] {
            let mut sse = SseText::new(4096);
            for piece in wire.as_bytes().chunks(step) {
                assert!(sse.push(piece).is_empty(), "no text, no error");
            }
            assert!(sse.done, "step {step}");
            assert_eq!(
                sse.tool_calls(),
                vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "weather".into(),
                        arguments: json!({"city": "Oslo"})
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "time".into(),
                        arguments: json!({})
                    },
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_streamed_tool_call_that_skips_an_index_has_no_name_or_grows_too_large_fails_the_stream() {
        let mut skipped = SseText::new(4096);
        let items = skipped.push(delta(&json!([{"index": 3, "id": "c", "function": {"name": "t"}}])).as_bytes());
        assert!(matches!(&items[..], [Err(ModelError::Failed(_))]));
        let mut nameless = SseText::new(4096);
        nameless.push(delta(&json!([{"index": 0, "id": "c", "function": {"arguments": "{}"}}])).as_bytes());
        let items = nameless.push(b"data: [DONE]\n\n");
        assert!(matches!(&items[..], [Err(ModelError::Failed(_))]));
        assert!(!nameless.done);
        let mut huge = SseText::new(64);
        let items = huge.push(
            delta(&json!([{"index": 0, "id": "c", "function": {"name": "t", "arguments": "x".repeat(100)}}]))
                .as_bytes(),
        );
        assert_eq!(items, vec![Err(ModelError::TooLarge(64))]);
    }
}
