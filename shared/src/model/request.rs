//! What the model is asked: a [`ModelRequest`] (instructions, messages, the tools it may call),
//! and the history normalised into a conversation every provider accepts ([`normalized`]).

use serde_json::Value;

/// Who said a message in a conversation: the user, the assistant (text, tool calls or both),
/// or a tool (the result of one call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    Tool,
}

impl Role {
    /// The text stored in `messages.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// A stored role; `None` for anything else.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// A tool the model may call: its name (valid for every provider), what it does, and the JSON
/// Schema of its arguments (an object schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A call the model asked for: the provider's id for it, the tool's name and the arguments.
/// Arguments the model wrote that are not a JSON object stay as it wrote them, a JSON string
/// (the run answers that call with an error, never calls the tool with them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

impl ToolCall {
    /// The arguments from the text a provider streamed or sent (`""` is no argument: `{}`).
    pub fn arguments_of(text: &str) -> Value {
        if text.trim().is_empty() {
            return Value::Object(Default::default());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => value,
            _ => Value::String(text.to_string()),
        }
    }

    /// The arguments as the JSON text OpenAI expects (what the model wrote, when it was not an
    /// object).
    pub fn arguments_text(&self) -> String {
        match &self.arguments {
            Value::String(raw) => raw.clone(),
            other => other.to_string(),
        }
    }
}

/// One message of a conversation. An assistant message may carry tool calls (its text may
/// then be empty); a tool message is the result (`content`) of the call `tool_call_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A text message of `role`.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The assistant's message asking for `calls` (with its text, possibly empty).
    pub fn calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
            tool_calls: calls,
            tool_call_id: None,
        }
    }

    /// The result of the call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(id.into()),
        }
    }
}

/// What the model is asked: the agent's instructions (system prompt), the conversation so far
/// (for a task: one user message, the task prompt, then the run's steps) and the tools it may
/// call (none: it can only answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    pub instructions: String,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
}

impl ModelRequest {
    /// A conversation as every provider accepts it (see [`normalized`]).
    pub fn conversation(instructions: String, history: Vec<ChatMessage>) -> Self {
        Self {
            instructions,
            messages: normalized(history),
            tools: Vec::new(),
        }
    }

    pub fn task(instructions: &str, prompt: &str) -> Self {
        Self {
            instructions: instructions.to_string(),
            messages: vec![ChatMessage::text(Role::User, prompt)],
            tools: Vec::new(),
        }
    }

    /// The same request offering `tools`.
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }
}

/// What a history with a call and no stored result tells the model in its place (a run cut
/// short, or a window that cut the result off).
pub const NO_RESULT: &str = r#"{"error":"no result was recorded for this call"}"#;

/// A history every provider accepts (Bedrock's Converse API and OpenAI reject the others):
///
/// - no empty message, no leading assistant or tool message;
/// - user and assistant turns alternate: consecutive messages of one role (a user message whose
///   answer failed, then the retry) are joined into one;
/// - every tool call is answered, right after the message that asked for it, once: a result
///   answering no open call is dropped, a call left without one gets [`NO_RESULT`].
pub fn normalized(history: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(history.len());
    // The calls of the last assistant message still waiting for their result.
    let mut open: Vec<String> = Vec::new();
    for message in history {
        if message.role == Role::Tool {
            let answers = message
                .tool_call_id
                .as_ref()
                .and_then(|id| open.iter().position(|o| o == id));
            if let Some(i) = answers {
                open.remove(i);
                out.push(message);
            }
            continue;
        }
        close(&mut out, &mut open);
        let empty = message.content.trim().is_empty() && message.tool_calls.is_empty();
        if empty || (out.is_empty() && message.role != Role::User) {
            continue;
        }
        open = message.tool_calls.iter().map(|c| c.id.clone()).collect();
        match out.last_mut() {
            Some(last) if last.role == message.role => {
                if !message.content.trim().is_empty() {
                    if !last.content.is_empty() {
                        last.content.push_str("\n\n");
                    }
                    last.content.push_str(&message.content);
                }
                last.tool_calls.extend(message.tool_calls);
            }
            _ => out.push(message),
        }
    }
    close(&mut out, &mut open);
    out
}

/// Answers the calls still open with [`NO_RESULT`].
fn close(out: &mut Vec<ChatMessage>, open: &mut Vec<String>) {
    out.extend(open.drain(..).map(|id| ChatMessage::tool_result(id, NO_RESULT)));
}

/// A message of `role` saying `content` (tests).
#[cfg(test)]
pub(super) fn said(role: Role, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn histories_alternate_start_with_the_user_and_have_no_empty_message() {
        let history = vec![
            said(Role::Assistant, "cut from an earlier window"),
            said(Role::User, "first"),
            said(Role::User, "first, retried after a failure"),
            said(Role::Assistant, ""),
            said(Role::Assistant, "answer"),
            said(Role::User, "  "),
            said(Role::User, "next"),
        ];
        assert_eq!(
            normalized(history),
            vec![
                said(Role::User, "first\n\nfirst, retried after a failure"),
                said(Role::Assistant, "answer"),
                said(Role::User, "next"),
            ]
        );
        assert!(normalized(vec![said(Role::Assistant, "only")]).is_empty());
    }

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "lookup".into(),
            arguments: json!({"q": id}),
        }
    }

    #[test]
    fn every_tool_call_is_answered_once_right_after_it_and_stray_results_are_dropped() {
        let history = vec![
            ChatMessage::tool_result("cut", "{}"),
            said(Role::User, "find a and b"),
            ChatMessage::calls("", vec![call("a"), call("b")]),
            ChatMessage::tool_result("b", r#"{"b":2}"#),
            ChatMessage::tool_result("b", r#"{"b":"again"}"#),
            ChatMessage::tool_result("zzz", "{}"),
            said(Role::User, "and?"),
            ChatMessage::calls("checking", vec![call("c")]),
        ];
        assert_eq!(
            normalized(history),
            vec![
                said(Role::User, "find a and b"),
                ChatMessage::calls("", vec![call("a"), call("b")]),
                ChatMessage::tool_result("b", r#"{"b":2}"#),
                ChatMessage::tool_result("a", NO_RESULT),
                said(Role::User, "and?"),
                ChatMessage::calls("checking", vec![call("c")]),
                ChatMessage::tool_result("c", NO_RESULT),
            ]
        );
    }

    #[test]
    fn arguments_that_are_not_an_object_are_kept_as_written() {
        assert_eq!(ToolCall::arguments_of(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(ToolCall::arguments_of(""), json!({}));
        assert_eq!(ToolCall::arguments_of("[1]"), json!("[1]"));
        assert_eq!(ToolCall::arguments_of("{oops"), json!("{oops"));
        let raw = ToolCall {
            id: "x".into(),
            name: "t".into(),
            arguments: json!("{oops"),
        };
        assert_eq!(raw.arguments_text(), "{oops");
        assert_eq!(call("a").arguments_text(), r#"{"q":"a"}"#);
    }
}
