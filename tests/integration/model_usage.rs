//! Token usage as each model client reads it from its provider's wire format (stand-ins speaking
//! it): OpenAI-compatible `usage`, plain and streamed with `stream_options.include_usage`,
//! Bedrock Converse `usage` and ConverseStream's `metadata` event, the local model's counts; a
//! provider that reports none is unknown (`None`), never 0.

use std::time::Duration;

use futures_util::StreamExt;
use integration_tests::fakes::{
    bedrock_streaming, bedrock_streaming_with, openai_streaming_provider, streamed_usage, FakeServer, Mode,
    StreamScript, PLAIN_USAGE,
};
use integration_tests::models::{bedrock_model, bedrock_model_at, limits};
use shared::model::openai::OpenAiModel;
use shared::model::{AgentModel, LocalModel, ModelRequest, StreamedReply, Usage};

fn request() -> ModelRequest {
    ModelRequest::task("Be brief.", "Tell me a story")
}

fn usage((input_tokens, output_tokens): (i64, i64)) -> Option<Usage> {
    Some(Usage {
        input_tokens,
        output_tokens,
    })
}

fn script(words: usize) -> StreamScript {
    StreamScript {
        words: (0..words).map(|i| format!("word{i} ")).collect(),
        gap: Duration::from_millis(5),
        break_after: None,
        break_when: None,
    }
}

/// The whole text of a streamed reply (every chunk, no error), read to its end.
async fn read_to_end(reply: &mut StreamedReply) -> String {
    let mut text = String::new();
    while let Some(chunk) = reply.text.next().await {
        text.push_str(&chunk.expect("no error"));
    }
    text
}

#[tokio::test]
async fn the_openai_client_reads_the_usage_and_the_model_of_a_plain_reply() {
    let server = FakeServer::openai().await;
    // Asked for an alias, the provider names the model that answered.
    let model = OpenAiModel::new(
        &format!("{}/v1", server.url()),
        None,
        "gpt-test-latest",
        limits(Duration::from_secs(5)),
    )
    .expect("an HTTP client with its timeouts");
    let reply = model.complete(&request()).await.expect("a reply");
    assert_eq!(reply.text, "openai says: Tell me a story");
    assert_eq!(
        reply.usage,
        usage(PLAIN_USAGE),
        "prompt_tokens in, completion_tokens out"
    );
    assert_eq!(reply.model.as_deref(), Some("gpt-test-2025-01-01"));
    assert_eq!(model.generate(&request()).await.expect("a reply"), reply.text);
}

#[tokio::test]
async fn a_streamed_openai_reply_asks_for_usage_and_reads_it_from_the_last_chunk() {
    let script = script(10);
    let provider = openai_streaming_provider(script.clone(), true).await;
    let model = OpenAiModel::new(&provider.url, None, "gpt-test", limits(Duration::from_secs(5)))
        .expect("an HTTP client with its timeouts");
    let mut reply = model.stream_reply(&request()).await.expect("a stream");
    assert_eq!(read_to_end(&mut reply).await, script.words.concat());
    assert_eq!(reply.usage(), usage(streamed_usage(&script)));
    assert_eq!(reply.model.as_deref(), Some("gpt-test"));
    let seen = provider.seen.lock().unwrap()[0].body.clone();
    assert_eq!(seen["stream"], true);
    assert_eq!(seen["stream_options"]["include_usage"], true, "{seen}");
    // The text-only stream is the same reply.
    let mut chunks = model.stream(&request()).await.expect("a stream");
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        text.push_str(&chunk.expect("no error"));
    }
    assert_eq!(text, script.words.concat());
}

#[tokio::test]
async fn an_openai_compatible_provider_that_reports_no_usage_gives_unknown_usage_never_zero() {
    let server = FakeServer::openai().await;
    server.set_mode(Mode::NoUsage);
    let model = OpenAiModel::new(
        &format!("{}/v1", server.url()),
        None,
        "gpt-test",
        limits(Duration::from_secs(5)),
    )
    .expect("an HTTP client with its timeouts");
    let reply = model.complete(&request()).await.expect("a reply");
    assert_eq!(reply.text, "openai says: Tell me a story");
    assert_eq!(reply.usage, None);
    assert_eq!(reply.model.as_deref(), Some("gpt-test"));

    let script = script(6);
    let provider = openai_streaming_provider(script.clone(), false).await;
    let model = OpenAiModel::new(&provider.url, None, "gpt-test", limits(Duration::from_secs(5)))
        .expect("an HTTP client with its timeouts");
    let mut streamed = model.stream_reply(&request()).await.expect("a stream");
    assert_eq!(read_to_end(&mut streamed).await, script.words.concat());
    assert_eq!(streamed.usage(), None);
    assert_eq!(streamed.model.as_deref(), Some("gpt-test"));
    let whole = model.complete(&request()).await.expect("a reply");
    assert_eq!((whole.text, whole.usage), (script.words.concat(), None));
}

#[tokio::test]
async fn the_bedrock_client_reads_the_usage_of_a_converse_reply() {
    let server = FakeServer::bedrock().await;
    let model = bedrock_model(&server, Duration::from_secs(5));
    let reply = model.complete(&request()).await.expect("a reply");
    assert_eq!(reply.text, "bedrock says: Tell me a story");
    assert_eq!(reply.usage, usage(PLAIN_USAGE), "inputTokens in, outputTokens out");
    assert_eq!(reply.model.as_deref(), Some("anthropic.claude-test"));

    server.set_mode(Mode::NoUsage);
    let reply = model.complete(&request()).await.expect("a reply");
    assert_eq!(
        (reply.text.as_str(), reply.usage),
        ("bedrock says: Tell me a story", None)
    );
}

#[tokio::test]
async fn the_bedrock_client_reads_the_usage_of_the_converse_stream_metadata_event() {
    let script = script(8);
    let url = bedrock_streaming(script.clone()).await;
    let model = bedrock_model_at(&url, Duration::from_secs(5));
    let mut reply = model.stream_reply(&request()).await.expect("a stream");
    assert_eq!(read_to_end(&mut reply).await, script.words.concat());
    assert_eq!(reply.usage(), usage(streamed_usage(&script)));
    assert_eq!(reply.model.as_deref(), Some("anthropic.claude-test"));

    // A stream that ends after messageStop without metadata: the whole text, usage unknown.
    let url = bedrock_streaming_with(script.clone(), false).await;
    let model = bedrock_model_at(&url, Duration::from_secs(5));
    let mut reply = model.stream_reply(&request()).await.expect("a stream");
    assert_eq!(read_to_end(&mut reply).await, script.words.concat());
    assert_eq!(reply.usage(), None);
}

#[tokio::test]
async fn the_local_model_reports_the_same_nonzero_usage_for_the_same_request_whole_or_streamed() {
    let model = LocalModel::default();
    let first = model.complete(&request()).await.expect("a reply");
    let again = model.complete(&request()).await.expect("a reply");
    assert_eq!(first, again);
    let counted = first.usage.expect("the local model reports usage");
    assert!(counted.input_tokens > 0 && counted.output_tokens > 0, "{counted:?}");
    assert_eq!(first.model.as_deref(), Some("local"));
    let longer = model
        .complete(&ModelRequest::task("Be brief.", "Tell me a story about a dragon"))
        .await
        .expect("a reply");
    assert!(longer.usage.expect("usage").input_tokens > counted.input_tokens);

    let mut streamed = model.stream_reply(&request()).await.expect("a stream");
    assert_eq!(read_to_end(&mut streamed).await, first.text);
    assert_eq!(streamed.usage(), first.usage);
    assert_eq!(streamed.model.as_deref(), Some("local"));
}
