//! The agent model behind one trait: the reply to a chat message and the work of a task.
//! The deterministic local model is the default so the product runs offline; remote clients
//! (an OpenAI-compatible endpoint with the `openai` feature, Amazon Bedrock with `bedrock`) plug
//! in behind the same trait. Only the binaries that call a model enable those features.

#[cfg(feature = "bedrock")]
pub mod bedrock;
#[cfg(feature = "openai")]
pub mod openai;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{invalid, ConfigError, Env, Setting, Unit};

pub const MODEL_PROVIDER: Setting = Setting::choice(
    "MODEL_PROVIDER",
    &["local", "openai", "bedrock"],
    "local",
    "which model answers chat messages and tasks",
);
pub const MODEL_TIMEOUT_MS: Setting =
    Setting::millis("MODEL_TIMEOUT_MS", 1, 600_000, 20_000, "bound on one remote model call");
pub const MODEL_MAX_REPLY_BYTES: Setting = Setting::number(
    "MODEL_MAX_REPLY_BYTES",
    1,
    10 * 1024 * 1024,
    32 * 1024,
    Unit::Bytes,
    "longest reply accepted (longer is an error, not a truncation)",
);
pub const MODEL_STREAM_GAP_MS: Setting = Setting::millis(
    "MODEL_STREAM_GAP_MS",
    1,
    600_000,
    10_000,
    "longest wait for the next chunk of a streamed reply (a stalled stream is a timeout)",
);
pub const MODEL_MAX_TOKENS: Setting = Setting::number(
    "MODEL_MAX_TOKENS",
    1,
    1_000_000,
    1024,
    Unit::Plain,
    "`max_tokens` asked of remote models",
);
pub const LOCAL_MODEL_LATENCY_MS: Setting = Setting::millis(
    "LOCAL_MODEL_LATENCY_MS",
    0,
    600_000,
    0,
    "the local model's simulated thinking time",
);
pub const OPENAI_BASE_URL: Setting = Setting::text(
    "OPENAI_BASE_URL",
    Some("https://api.openai.com/v1"),
    "any OpenAI-compatible chat-completions endpoint (`MODEL_PROVIDER=openai`)",
);
pub const OPENAI_API_KEY: Setting = Setting::secret("OPENAI_API_KEY", "bearer key for that endpoint");
pub const OPENAI_MODEL: Setting = Setting::text(
    "OPENAI_MODEL",
    None,
    "model name sent to that endpoint (required with `openai`)",
);
pub const BEDROCK_MODEL_ID: Setting = Setting::text(
    "BEDROCK_MODEL_ID",
    None,
    "Bedrock model or inference-profile id (required with `bedrock`; region and credentials from the AWS environment)",
);

pub const SETTINGS: &[&Setting] = &[
    &MODEL_PROVIDER,
    &MODEL_TIMEOUT_MS,
    &MODEL_MAX_REPLY_BYTES,
    &MODEL_STREAM_GAP_MS,
    &MODEL_MAX_TOKENS,
    &LOCAL_MODEL_LATENCY_MS,
    &OPENAI_BASE_URL,
    &OPENAI_API_KEY,
    &OPENAI_MODEL,
    &BEDROCK_MODEL_ID,
];

/// Bounds every remote model client applies.
#[derive(Debug, Clone, Copy)]
pub struct ModelLimits {
    pub timeout: Duration,
    /// Longer replies are an error, not a truncation.
    pub max_reply_bytes: usize,
    pub max_tokens: u32,
    /// Longest wait for the next chunk of a streamed reply.
    pub stream_gap: Duration,
}

impl ModelLimits {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            timeout: env.duration(&MODEL_TIMEOUT_MS)?,
            max_reply_bytes: usize::try_from(env.number(&MODEL_MAX_REPLY_BYTES)?).unwrap_or(usize::MAX),
            max_tokens: u32::try_from(env.number(&MODEL_MAX_TOKENS)?).unwrap_or(u32::MAX),
            stream_gap: env.duration(&MODEL_STREAM_GAP_MS)?,
        })
    }
}

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

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// The provider is throttling (HTTP 429 or 503, Bedrock's throttling and not-ready errors):
    /// not a failure of the request, come back after `retry_after` (when the provider said).
    #[error("the model provider is throttling")]
    Throttled { retry_after: Option<Duration> },
    #[error("model timed out after {0} ms")]
    Timeout(u64),
    #[error("model error: {0}")]
    Failed(String),
    #[error("model reply larger than {0} bytes")]
    TooLarge(usize),
}

impl ModelError {
    /// What may be stored where users read it (a task's `lastError`) or shown: a class and a
    /// fixed sentence. A provider's own error text can carry account ids, role ARNs or masked
    /// keys: it goes to the log, never here.
    pub fn public_summary(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "model_throttled: the model provider is throttling",
            Self::Timeout(_) => "model_timeout: the model did not answer in time",
            Self::Failed(_) => "model_error: the model provider answered with an error (details in the function's log)",
            Self::TooLarge(_) => "model_reply_too_large: the model's reply was larger than allowed",
        }
    }
}

/// A reply as the model writes it: text chunks in order; an error after the first chunk is an
/// item of the stream (an error before it is the `Err` of [`AgentModel::stream`]).
pub type TextStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<String, ModelError>> + Send>>;

/// Tokens a call cost, as the provider reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// A whole reply, what it cost (`None`: the provider reported nothing, which is stored as
/// unknown, never as 0) and the model that wrote it (`None`: not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub usage: Option<Usage>,
    pub model: Option<String>,
}

/// Where a streamed reply's usage lands when the provider reports it (OpenAI's last chunk with
/// `stream_options.include_usage`, Bedrock's `metadata` event): read it once the text stream ended.
pub type UsageSlot = Arc<std::sync::Mutex<Option<Usage>>>;

/// A reply streamed, with its usage to come and the model writing it.
pub struct StreamedReply {
    pub text: TextStream,
    pub usage: UsageSlot,
    pub model: Option<String>,
}

impl StreamedReply {
    /// The usage the stream reported (read after the text stream ended).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.lock().ok().and_then(|u| *u)
    }
}

#[async_trait]
pub trait AgentModel: Send + Sync {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError>;

    /// The reply, streamed. A model that cannot stream answers with the whole reply as one chunk.
    async fn stream(&self, request: &ModelRequest) -> Result<TextStream, ModelError> {
        let text = self.generate(request).await?;
        Ok(Box::pin(futures_util::stream::iter([Ok(text)])))
    }

    /// The reply with its usage. A model that reports none answers `usage: None` (unknown).
    async fn complete(&self, request: &ModelRequest) -> Result<Reply, ModelError> {
        Ok(Reply {
            text: self.generate(request).await?,
            usage: None,
            model: None,
        })
    }

    /// The reply streamed, with its usage once the stream ends.
    async fn stream_reply(&self, request: &ModelRequest) -> Result<StreamedReply, ModelError> {
        Ok(StreamedReply {
            text: self.stream(request).await?,
            usage: UsageSlot::default(),
            model: None,
        })
    }
}

pub type SharedModel = Arc<dyn AgentModel>;

/// Deterministic and offline: the same request always gets the same reply, after a fixed
/// latency (`LOCAL_MODEL_LATENCY_MS`, default 0) that stands in for a real model's. Its usage is
/// deterministic too: a token is a whitespace-separated word, the input the instructions' and
/// every message's words, the output the reply's (see [`LocalModel::usage`]).
#[derive(Debug, Default, Clone)]
pub struct LocalModel {
    pub latency: std::time::Duration,
}

/// The name the local model reports as the model of its replies.
pub const LOCAL_MODEL_NAME: &str = "local";

impl LocalModel {
    fn reply(request: &ModelRequest) -> String {
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let excerpt: String = last.chars().take(200).collect();
        format!(
            "[local model] {} message(s) considered. You said: {excerpt}",
            request.messages.len()
        )
    }

    /// What `reply` to `request` costs, counted in words: the input is the words of the
    /// instructions and of every message, the output the words of the reply.
    pub fn usage(request: &ModelRequest, reply: &str) -> Usage {
        let words = |text: &str| i64::try_from(text.split_whitespace().count()).unwrap_or(i64::MAX);
        let input = request.messages.iter().fold(words(&request.instructions), |sum, m| {
            sum.saturating_add(words(&m.content))
        });
        Usage {
            input_tokens: input,
            output_tokens: words(reply),
        }
    }
}

#[async_trait]
impl AgentModel for LocalModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(Self::reply(request))
    }

    async fn stream(&self, request: &ModelRequest) -> Result<TextStream, ModelError> {
        Ok(self.stream_reply(request).await?.text)
    }

    async fn complete(&self, request: &ModelRequest) -> Result<Reply, ModelError> {
        let text = self.generate(request).await?;
        Ok(Reply {
            usage: Some(Self::usage(request, &text)),
            text,
            model: Some(LOCAL_MODEL_NAME.to_string()),
        })
    }

    /// Word by word, the latency spread over the words (the first one after its share); the
    /// usage lands in the slot when the stream ends.
    async fn stream_reply(&self, request: &ModelRequest) -> Result<StreamedReply, ModelError> {
        let reply = Self::reply(request);
        let usage = Self::usage(request, &reply);
        let words: std::collections::VecDeque<String> = reply.split_inclusive(' ').map(str::to_string).collect();
        let pause = self.latency / u32::try_from(words.len().max(1)).unwrap_or(u32::MAX);
        let slot = UsageSlot::default();
        let filled = slot.clone();
        let text = futures_util::stream::unfold(words, move |mut words| {
            let filled = filled.clone();
            async move {
                let Some(word) = words.pop_front() else {
                    if let Ok(mut slot) = filled.lock() {
                        *slot = Some(usage);
                    }
                    return None;
                };
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                Some((Ok(word), words))
            }
        });
        Ok(StreamedReply {
            text: Box::pin(text),
            usage: slot,
            model: Some(LOCAL_MODEL_NAME.to_string()),
        })
    }
}

/// The model chosen by `MODEL_PROVIDER`.
pub async fn from_env(env: &Env) -> Result<SharedModel, ConfigError> {
    let limits = ModelLimits::from_env(env)?;
    match env.choice(&MODEL_PROVIDER)? {
        "openai" => openai_from_env(env, limits),
        "bedrock" => bedrock_from_env(env, limits).await,
        _ => Ok(Arc::new(LocalModel {
            latency: env.duration(&LOCAL_MODEL_LATENCY_MS)?,
        })),
    }
}

#[cfg(feature = "openai")]
fn openai_from_env(env: &Env, limits: ModelLimits) -> Result<SharedModel, ConfigError> {
    let base = env.required(&OPENAI_BASE_URL)?;
    url::Url::parse(&base).map_err(|e| invalid(OPENAI_BASE_URL.name, format!("not a valid URL ({e})")))?;
    let model = env.required(&OPENAI_MODEL)?;
    Ok(Arc::new(openai::OpenAiModel::new(
        &base,
        env.text(&OPENAI_API_KEY),
        &model,
        limits,
    )))
}

#[cfg(not(feature = "openai"))]
fn openai_from_env(_: &Env, _: ModelLimits) -> Result<SharedModel, ConfigError> {
    Err(invalid(
        MODEL_PROVIDER.name,
        "this binary is built without the openai client",
    ))
}

#[cfg(feature = "bedrock")]
async fn bedrock_from_env(env: &Env, limits: ModelLimits) -> Result<SharedModel, ConfigError> {
    let model_id = env.required(&BEDROCK_MODEL_ID)?;
    Ok(Arc::new(bedrock::BedrockModel::from_env(&model_id, limits).await))
}

#[cfg(not(feature = "bedrock"))]
async fn bedrock_from_env(_: &Env, _: ModelLimits) -> Result<SharedModel, ConfigError> {
    Err(invalid(
        MODEL_PROVIDER.name,
        "this binary is built without the bedrock client",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

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

    #[tokio::test]
    async fn the_local_model_is_deterministic() {
        let req = ModelRequest::task("be brief", "summarise");
        let a = LocalModel::default().generate(&req).await.unwrap();
        let b = LocalModel::default().generate(&req).await.unwrap();
        assert_eq!(a, b);
        assert!(a.contains("summarise"));
    }

    #[tokio::test]
    async fn the_local_models_usage_counts_words_whole_or_streamed() {
        use futures_util::StreamExt;
        let req = ModelRequest::conversation(
            "be brief".into(),
            vec![
                said(Role::User, "one two three"),
                said(Role::Assistant, "four"),
                said(Role::User, "five six"),
            ],
        );
        let reply = LocalModel::default().complete(&req).await.unwrap();
        let words = reply.text.split_whitespace().count() as i64;
        assert_eq!(
            reply.usage,
            Some(Usage {
                input_tokens: 2 + 3 + 1 + 2,
                output_tokens: words
            })
        );
        assert_eq!(reply.model.as_deref(), Some("local"));
        let mut streamed = LocalModel::default().stream_reply(&req).await.unwrap();
        let mut text = String::new();
        while let Some(chunk) = streamed.text.next().await {
            assert_eq!(streamed.usage(), None, "the usage comes when the stream ends");
            text.push_str(&chunk.unwrap());
        }
        assert_eq!(text, reply.text);
        assert_eq!(streamed.usage(), reply.usage);
        assert_eq!(streamed.model.as_deref(), Some("local"));
    }
}
