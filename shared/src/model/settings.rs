//! The model settings (`MODEL_*`, the local model's, the OpenAI-compatible endpoint's and
//! Bedrock's) and the [`ModelLimits`] every remote client applies.

use std::time::Duration;

use crate::config::{ConfigError, Env, Setting, Unit};

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
