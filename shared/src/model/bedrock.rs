//! Amazon Bedrock through the Converse and ConverseStream APIs (aws-config and the Bedrock runtime
//! SDK, rustls with ring as the TLS stack), with tools (`toolConfig`, `toolUse`, `toolResult`).

use async_trait::async_trait;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ContentBlockStart, ConversationRole, ConverseOutput, ConverseStreamOutput,
    InferenceConfiguration, Message, SystemContentBlock, TokenUsage, Tool, ToolConfiguration, ToolInputSchema,
    ToolResultBlock, ToolResultContentBlock, ToolSpecification, ToolUseBlock,
};
use aws_sdk_bedrockruntime::Client;
use aws_smithy_types::{Document, Number};
use serde_json::Value;

use super::{
    AgentModel, ChatMessage, ModelError, ModelLimits, ModelRequest, Reply, Role, StreamedReply, TextStream, ToolCall,
    ToolCallSlot, Usage, UsageSlot,
};

pub struct BedrockModel {
    client: Client,
    model_id: String,
    limits: ModelLimits,
}

/// The SDK's HTTP client: hyper + rustls with ring (the one TLS stack of the project).
pub fn http_client() -> aws_sdk_bedrockruntime::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl BedrockModel {
    /// From the environment's AWS configuration (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env(model_id: &str, limits: ModelLimits) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(limits.timeout)
                    .build(),
            )
            // Throttling is handed back to the caller (the scheduler reschedules, chat answers
            // 503): the SDK does not retry on its own.
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .load()
            .await;
        Self::from_client(Client::new(&config), model_id, limits)
    }

    pub fn from_client(client: Client, model_id: &str, limits: ModelLimits) -> Self {
        Self {
            client,
            model_id: model_id.to_string(),
            limits,
        }
    }
}

/// Bedrock's `usage` (`inputTokens`, `outputTokens`) as a reply's. Not a count: a negative one,
/// or all of them 0 — the SDK fills a `usage` Bedrock did not send with zeros (it is a required
/// member), and no real call reads no input and writes nothing, so that is unknown, never 0.
fn usage_of(usage: &TokenUsage) -> Option<Usage> {
    let (input, output) = (usage.input_tokens(), usage.output_tokens());
    let fabricated = input == 0 && output == 0 && usage.total_tokens() == 0;
    (input >= 0 && output >= 0 && !fabricated).then(|| Usage {
        input_tokens: i64::from(input),
        output_tokens: i64::from(output),
    })
}

fn text(content: &str) -> ContentBlock {
    ContentBlock::Text(content.to_string())
}

/// A tool's result as a `toolResult` block: its text, as the tool answered it.
fn tool_result(message: &ChatMessage) -> Result<ContentBlock, aws_smithy_types::error::operation::BuildError> {
    ToolResultBlock::builder()
        .tool_use_id(message.tool_call_id.as_deref().unwrap_or_default())
        .content(ToolResultContentBlock::Text(message.content.clone()))
        .build()
        .map(ContentBlock::ToolResult)
}

/// Arguments as Bedrock takes them: an object (what a model wrote that was not one is `{}`:
/// the run answered that call with an error and never used them).
fn object_or_empty(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        _ => Value::Object(Default::default()),
    }
}

/// JSON as a Smithy document.
pub fn document_of(value: &Value) -> Document {
    match value {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or_default())
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(items) => Document::Array(items.iter().map(document_of).collect()),
        Value::Object(fields) => Document::Object(fields.iter().map(|(k, v)| (k.clone(), document_of(v))).collect()),
    }
}

/// A Smithy document as JSON (a float that JSON cannot hold is `null`).
pub fn json_of(document: &Document) -> Value {
    match document {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        Document::Number(Number::Float(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Document::String(s) => Value::String(s.clone()),
        Document::Array(items) => Value::Array(items.iter().map(json_of).collect()),
        Document::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), json_of(v))).collect()),
    }
}

/// Bedrock's errors that mean "come back later" rather than "this request failed".
const THROTTLING: [&str; 4] = [
    "ThrottlingException",
    "ServiceUnavailableException",
    "ModelNotReadyException",
    "ServiceQuotaExceededException",
];

/// An SDK error as a model error: throttling apart, the rest with Bedrock's code and message.
fn sdk_error<E, R>(e: SdkError<E, R>, timeout_ms: u64) -> ModelError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if !matches!(e, SdkError::ServiceError(_)) {
        // The class goes on as the model error; the SDK's cause stays here, in the log.
        tracing::warn!(error = %crate::telemetry::Chain(&e), "the Bedrock call failed");
    }
    match e {
        SdkError::TimeoutError(_) => ModelError::Timeout(timeout_ms),
        SdkError::DispatchFailure(_) => ModelError::Failed("Bedrock is unreachable".into()),
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("error");
            if THROTTLING.iter().any(|t| t.eq_ignore_ascii_case(code)) {
                return ModelError::Throttled { retry_after: None };
            }
            ModelError::Failed(format!(
                "{code}: {}",
                err.message().unwrap_or("").chars().take(200).collect::<String>()
            ))
        }
        other => ModelError::Failed(format!("Bedrock call failed: {other}")),
    }
}

impl BedrockModel {
    /// The conversation as Converse messages: a tool call is a `toolUse` block of the
    /// assistant's message, a result a `toolResult` block of the user's next one (the results
    /// of one step and a user message after them are one user message: roles alternate).
    fn messages(request: &ModelRequest) -> Result<Vec<Message>, ModelError> {
        let built = |e: aws_smithy_types::error::operation::BuildError| {
            ModelError::Failed(format!("cannot build the request: {e}"))
        };
        let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
        for m in &request.messages {
            let (role, blocks) = match m.role {
                Role::User => (ConversationRole::User, vec![text(&m.content)]),
                Role::Tool => (ConversationRole::User, vec![tool_result(m).map_err(built)?]),
                Role::Assistant => {
                    let mut blocks = Vec::with_capacity(1 + m.tool_calls.len());
                    if !m.content.is_empty() {
                        blocks.push(text(&m.content));
                    }
                    for call in &m.tool_calls {
                        blocks.push(ContentBlock::ToolUse(
                            ToolUseBlock::builder()
                                .tool_use_id(&call.id)
                                .name(&call.name)
                                .input(document_of(&object_or_empty(&call.arguments)))
                                .build()
                                .map_err(built)?,
                        ));
                    }
                    (ConversationRole::Assistant, blocks)
                }
            };
            match turns.last_mut() {
                Some((last, previous)) if *last == role => previous.extend(blocks),
                _ => turns.push((role, blocks)),
            }
        }
        turns
            .into_iter()
            .map(|(role, blocks)| {
                Message::builder()
                    .role(role)
                    .set_content(Some(blocks))
                    .build()
                    .map_err(built)
            })
            .collect()
    }

    /// The tools as Converse's `toolConfig` (none when there are none).
    fn tool_config(request: &ModelRequest) -> Result<Option<ToolConfiguration>, ModelError> {
        if request.tools.is_empty() {
            return Ok(None);
        }
        let built = |e: aws_smithy_types::error::operation::BuildError| {
            ModelError::Failed(format!("cannot build the tools: {e}"))
        };
        let mut config = ToolConfiguration::builder();
        for tool in &request.tools {
            config = config.tools(Tool::ToolSpec(
                ToolSpecification::builder()
                    .name(&tool.name)
                    .description(&tool.description)
                    .input_schema(ToolInputSchema::Json(document_of(&tool.parameters)))
                    .build()
                    .map_err(built)?,
            ));
        }
        config.build().map(Some).map_err(built)
    }

    /// The agent's instructions as the system prompt (none when empty).
    fn system(request: &ModelRequest) -> Option<Vec<SystemContentBlock>> {
        (!request.instructions.is_empty()).then(|| vec![SystemContentBlock::Text(request.instructions.clone())])
    }

    fn inference(&self) -> InferenceConfiguration {
        InferenceConfiguration::builder()
            .max_tokens(self.limits.max_tokens as i32)
            .build()
    }

    fn timeout_ms(&self) -> u64 {
        self.limits.timeout.as_millis() as u64
    }
}

#[async_trait]
impl AgentModel for BedrockModel {
    async fn generate(&self, request: &ModelRequest) -> Result<String, ModelError> {
        Ok(self.complete(request).await?.text)
    }

    /// Converse: the reply with its `usage` (`None` when Bedrock sent none); the model is the
    /// configured model id.
    async fn complete(&self, request: &ModelRequest) -> Result<Reply, ModelError> {
        let call = self
            .client
            .converse()
            .model_id(&self.model_id)
            .set_messages(Some(Self::messages(request)?))
            .set_system(Self::system(request))
            .set_tool_config(Self::tool_config(request)?)
            .inference_config(self.inference());
        let output = tokio::time::timeout(self.limits.timeout, call.send())
            .await
            .map_err(|_| ModelError::Timeout(self.timeout_ms()))?
            .map_err(|e| sdk_error(e, self.timeout_ms()))?;
        let usage = output.usage().and_then(usage_of);
        let Some(ConverseOutput::Message(message)) = output.output else {
            return Err(ModelError::Failed("Bedrock returned no message".into()));
        };
        let mut reply = String::new();
        let mut tool_calls = Vec::new();
        let mut size = 0;
        for block in message.content {
            match block {
                ContentBlock::Text(t) => {
                    size += t.len();
                    reply.push_str(&t);
                }
                ContentBlock::ToolUse(call) => {
                    let arguments = json_of(call.input());
                    size += call.name.len() + arguments.to_string().len();
                    tool_calls.push(ToolCall {
                        id: call.tool_use_id,
                        name: call.name,
                        arguments,
                    });
                }
                _ => {}
            }
            if size > self.limits.max_reply_bytes {
                return Err(ModelError::TooLarge(self.limits.max_reply_bytes));
            }
        }
        Ok(Reply {
            text: reply,
            tool_calls,
            usage,
            model: Some(self.model_id.clone()),
        })
    }

    async fn stream(&self, request: &ModelRequest) -> Result<TextStream, ModelError> {
        Ok(self.stream_reply(request).await?.text)
    }

    /// ConverseStream: errors answered before the stream are the `Err` (throttling included);
    /// then each text delta as it comes, each within `MODEL_STREAM_GAP_MS` of the previous, the
    /// whole within `MODEL_TIMEOUT_MS` and `MODEL_MAX_REPLY_BYTES`, until `messageStop` and the
    /// `metadata` event after it, whose `usage` lands in the slot. Once `messageStop` came the
    /// reply is whole: a stream that then ends, breaks or stalls without `metadata` ends the
    /// text without an error and leaves the usage unknown.
    async fn stream_reply(&self, request: &ModelRequest) -> Result<StreamedReply, ModelError> {
        let call = self
            .client
            .converse_stream()
            .model_id(&self.model_id)
            .set_messages(Some(Self::messages(request)?))
            .set_system(Self::system(request))
            .set_tool_config(Self::tool_config(request)?)
            .inference_config(self.inference());
        let timeout_ms = self.timeout_ms();
        let output = tokio::time::timeout(self.limits.timeout, call.send())
            .await
            .map_err(|_| ModelError::Timeout(timeout_ms))?
            .map_err(|e| sdk_error(e, timeout_ms))?;
        let limits = self.limits;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let usage = UsageSlot::default();
        let tool_calls = ToolCallSlot::default();
        let (filled, called) = (usage.clone(), tool_calls.clone());
        let state = Converse {
            events: output.stream,
            bytes: 0,
            finished: false,
            stopped: false,
            metadata: false,
            calls: Vec::new(),
        };
        let text: TextStream = Box::pin(futures_util::stream::unfold(state, move |mut s| {
            let (filled, called) = (filled.clone(), called.clone());
            async move {
                if s.finished {
                    return None;
                }
                loop {
                    if s.stopped && s.metadata {
                        return None;
                    }
                    let wait = limits
                        .stream_gap
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    let event = match tokio::time::timeout(wait, s.events.recv()).await {
                        // The reply is whole: only its usage is missing.
                        Err(_) | Ok(Err(_) | Ok(None)) if s.stopped => return None,
                        Err(_) => return Some(s.fail(ModelError::Timeout(timeout_ms))),
                        Ok(Err(e)) => {
                            // After the first chunk even throttling is the stream's failure.
                            let error = match sdk_error(e, timeout_ms) {
                                ModelError::Throttled { .. } => {
                                    ModelError::Failed("Bedrock throttled mid-stream".into())
                                }
                                other => other,
                            };
                            return Some(s.fail(error));
                        }
                        Ok(Ok(None)) => {
                            return Some(s.fail(ModelError::Failed("the stream ended before messageStop".into())));
                        }
                        Ok(Ok(Some(event))) => event,
                    };
                    match event {
                        ConverseStreamOutput::ContentBlockStart(start) if !s.stopped => {
                            if let Some(ContentBlockStart::ToolUse(call)) = start.start {
                                s.bytes += call.name.len();
                                s.calls
                                    .push((start.content_block_index, call.tool_use_id, call.name, String::new()));
                            }
                        }
                        ConverseStreamOutput::ContentBlockDelta(d) if !s.stopped => match d.delta {
                            Some(ContentBlockDelta::Text(text)) => {
                                s.bytes += text.len();
                                if s.bytes > limits.max_reply_bytes {
                                    return Some(s.fail(ModelError::TooLarge(limits.max_reply_bytes)));
                                }
                                if !text.is_empty() {
                                    return Some((Ok(text), s));
                                }
                            }
                            Some(ContentBlockDelta::ToolUse(piece)) => {
                                let index = d.content_block_index;
                                let Some(call) = s.calls.iter_mut().find(|c| c.0 == index) else {
                                    return Some(s.fail(ModelError::Failed(
                                        "a toolUse delta came for a block that did not start".into(),
                                    )));
                                };
                                s.bytes += piece.input.len();
                                call.3.push_str(&piece.input);
                                if s.bytes > limits.max_reply_bytes {
                                    return Some(s.fail(ModelError::TooLarge(limits.max_reply_bytes)));
                                }
                            }
                            _ => {}
                        },
                        ConverseStreamOutput::MessageStop(_) => {
                            s.stopped = true;
                            if let Ok(mut slot) = called.lock() {
                                *slot = s
                                    .calls
                                    .iter()
                                    .map(|(_, id, name, input)| ToolCall {
                                        id: id.clone(),
                                        name: name.clone(),
                                        arguments: ToolCall::arguments_of(input),
                                    })
                                    .collect();
                            }
                        }
                        ConverseStreamOutput::Metadata(m) => {
                            s.metadata = true;
                            if let (Some(seen), Ok(mut slot)) = (m.usage().and_then(usage_of), filled.lock()) {
                                *slot = Some(seen);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }));
        Ok(StreamedReply {
            text,
            usage,
            tool_calls,
            model: Some(self.model_id.clone()),
        })
    }
}

/// Where a ConverseStream reply is.
struct Converse {
    events: aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver<
        ConverseStreamOutput,
        aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError,
    >,
    /// Reply bytes so far.
    bytes: usize,
    /// An error was given: nothing more comes.
    finished: bool,
    /// `messageStop` came: the text is whole.
    stopped: bool,
    /// `metadata` came.
    metadata: bool,
    /// The tool calls so far: their block's index, id, name and input text.
    calls: Vec<(i32, String, String, String)>,
}

impl Converse {
    /// The stream's last item: `error`.
    fn fail(mut self, error: ModelError) -> (Result<String, ModelError>, Self) {
        self.finished = true;
        (Err(error), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: i32, output: i32, total: i32) -> TokenUsage {
        TokenUsage::builder()
            .input_tokens(input)
            .output_tokens(output)
            .total_tokens(total)
            .build()
            .unwrap()
    }

    #[test]
    fn bedrock_usage_that_is_absent_or_not_a_count_is_unknown() {
        assert_eq!(
            usage_of(&tokens(12, 7, 19)),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 7
            })
        );
        assert_eq!(
            usage_of(&tokens(12, 0, 12)),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 0
            })
        );
        assert_eq!(
            usage_of(&tokens(0, 0, 0)),
            None,
            "what the SDK makes of an absent usage"
        );
        assert_eq!(usage_of(&tokens(-1, 7, 6)), None);
    }

    #[test]
    fn json_and_documents_convert_both_ways() {
        let value = serde_json::json!({"a": [1, -2, 2.5, "x", true, null], "b": {"c": {}}});
        assert_eq!(json_of(&document_of(&value)), value);
    }

    #[test]
    fn tool_results_and_a_user_message_after_them_are_one_user_turn_and_calls_are_tool_use_blocks() {
        use super::super::ToolCall;
        let call = |id: &str| ToolCall {
            id: id.into(),
            name: "lookup".into(),
            arguments: serde_json::json!({"q": id}),
        };
        let request = ModelRequest {
            instructions: String::new(),
            messages: vec![
                ChatMessage::text(Role::User, "find a and b"),
                ChatMessage::calls("", vec![call("a"), call("b")]),
                ChatMessage::tool_result("a", "1"),
                ChatMessage::tool_result("b", "2"),
                ChatMessage::text(Role::User, "thanks"),
            ],
            tools: Vec::new(),
        };
        let messages = BedrockModel::messages(&request).unwrap();
        let roles: Vec<_> = messages.iter().map(|m| m.role().clone()).collect();
        assert_eq!(
            roles,
            vec![
                ConversationRole::User,
                ConversationRole::Assistant,
                ConversationRole::User
            ]
        );
        assert!(messages[1].content().iter().all(ContentBlock::is_tool_use));
        assert_eq!(messages[2].content().len(), 3);
        assert!(messages[2].content()[0].is_tool_result() && messages[2].content()[2].is_text());
        assert!(BedrockModel::tool_config(&request).unwrap().is_none());
    }
}
