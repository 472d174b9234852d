//! The deterministic, offline local model (the default provider).

use async_trait::async_trait;

use super::{AgentModel, ModelError, ModelRequest, Reply, Role, StreamedReply, TextStream, Usage, UsageSlot};

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
        let usage = Some(Self::usage(request, &text));
        Ok(Reply::text(text, usage, Some(LOCAL_MODEL_NAME.to_string())))
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
        Ok(StreamedReply::text(
            Box::pin(text),
            slot,
            Some(LOCAL_MODEL_NAME.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::request::said;

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
