//! What the model is asked: a [`ModelRequest`] (instructions and messages), and the history
//! normalised into a conversation every provider accepts ([`normalized`]).

/// Who said a message in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    /// The text stored in `messages.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// A stored role; `None` for anything else.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What the model is asked: the agent's instructions (system prompt) and the conversation so far
/// (for a task: one user message, the task prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    pub instructions: String,
    pub messages: Vec<ChatMessage>,
}

impl ModelRequest {
    /// A conversation as every provider accepts it (see [`normalized`]).
    pub fn conversation(instructions: String, history: Vec<ChatMessage>) -> Self {
        Self {
            instructions,
            messages: normalized(history),
        }
    }

    pub fn task(instructions: &str, prompt: &str) -> Self {
        Self {
            instructions: instructions.to_string(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: prompt.to_string(),
            }],
        }
    }
}

/// A history every provider accepts (Bedrock's Converse API rejects the others): no empty
/// message, no leading assistant message, and roles that alternate — consecutive messages of one
/// role (a user message whose answer failed, then the retry) are joined into one.
pub fn normalized(history: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(history.len());
    for message in history {
        if message.content.trim().is_empty() || (out.is_empty() && message.role == Role::Assistant) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == message.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&message.content);
            }
            _ => out.push(message),
        }
    }
    out
}

/// A message of `role` saying `content` (tests).
#[cfg(test)]
pub(super) fn said(role: Role, content: &str) -> ChatMessage {
    ChatMessage {
        role,
        content: content.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
