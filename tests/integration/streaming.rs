//! Streamed replies from the model clients: the OpenAI-compatible client reading Server-Sent
//! Events as the stand-in writes them, its bounds, and the local model word by word.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use integration_tests::fakes::{bedrock_streaming, openai_streaming, FakeServer, Mode, StreamScript};
use integration_tests::models::{bedrock_model_at, limits};
use shared::model::openai::OpenAiModel;
use shared::model::{AgentModel, LocalModel, ModelError, ModelRequest};

fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("word{i} ")).collect()
}

/// Every item of a streamed reply, with when it arrived.
async fn collect(model: &dyn AgentModel) -> Result<Vec<(Instant, Result<String, ModelError>)>, ModelError> {
    let request = ModelRequest::task("Be brief.", "Tell me a story");
    let mut stream = model.stream(&request).await?;
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push((Instant::now(), item));
    }
    Ok(out)
}

#[tokio::test]
async fn the_openai_client_hands_on_each_chunk_as_the_provider_writes_it() {
    let (url, last_written) = openai_streaming(StreamScript {
        words: words(10),
        gap: Duration::from_millis(100),
        break_after: None,
        break_when: None,
    })
    .await;
    let model = OpenAiModel::new(&url, None, "gpt-test", limits(Duration::from_secs(5)))
        .expect("an HTTP client with its timeouts");
    let items = collect(&model).await.expect("a stream");
    let text: String = items.iter().map(|(_, i)| i.clone().expect("no error")).collect();
    assert_eq!(text, words(10).concat());
    let last = last_written.lock().unwrap().expect("the stand-in wrote its last word");
    assert!(
        items[0].0 < last,
        "the first chunk was handed on before the provider had written the reply's end"
    );
}

#[tokio::test]
async fn a_stream_cut_mid_reply_ends_with_an_error_after_the_chunks_that_came() {
    let (url, _) = openai_streaming(StreamScript {
        words: words(10),
        gap: Duration::from_millis(10),
        break_after: Some(3),
        break_when: None,
    })
    .await;
    let model = OpenAiModel::new(&url, None, "gpt-test", limits(Duration::from_secs(5)))
        .expect("an HTTP client with its timeouts");
    let mut items: Vec<_> = collect(&model)
        .await
        .expect("a stream")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    // The cut may swallow what was still in flight: what came is a prefix, then the error.
    assert!(matches!(items.pop(), Some(Err(ModelError::Failed(_)))), "{items:?}");
    let text: String = items.into_iter().map(|i| i.expect("chunks before the error")).collect();
    assert!(!text.is_empty() && words(3).concat().starts_with(&text), "{text:?}");
}

#[tokio::test]
async fn a_stalled_stream_is_a_timeout_after_the_gap_bound() {
    let (url, _) = openai_streaming(StreamScript {
        words: words(3),
        gap: Duration::from_secs(30),
        break_after: None,
        break_when: None,
    })
    .await;
    let mut bounds = limits(Duration::from_secs(60));
    bounds.stream_gap = Duration::from_millis(200);
    let model = OpenAiModel::new(&url, None, "gpt-test", bounds).expect("an HTTP client with its timeouts");
    let items: Vec<_> = collect(&model)
        .await
        .expect("a stream")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert_eq!(items, vec![Err(ModelError::Timeout(200))]);
}

#[tokio::test]
async fn throttling_before_the_first_byte_is_the_streams_error_with_the_providers_delay() {
    let server = FakeServer::openai().await;
    server.set_mode(Mode::Throttled);
    let model = OpenAiModel::new(
        &format!("{}/v1", server.url()),
        None,
        "gpt-test",
        limits(Duration::from_secs(5)),
    )
    .expect("an HTTP client with its timeouts");
    let err = collect(&model).await.expect_err("throttled");
    assert_eq!(
        err,
        ModelError::Throttled {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    let seen = server.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.body["stream"], true, "the request asked for a stream");
}

#[tokio::test]
async fn the_local_model_streams_word_by_word_the_reply_it_would_give_whole() {
    let model = LocalModel {
        latency: Duration::from_millis(100),
    };
    let request = ModelRequest::task("Be brief.", "Tell me a story");
    let whole = model.generate(&request).await.unwrap();
    let items = collect(&model).await.unwrap();
    assert!(items.len() > 3, "{items:?}");
    let text: String = items.into_iter().map(|(_, i)| i.unwrap()).collect();
    assert_eq!(text, whole);
}

#[tokio::test]
async fn the_bedrock_client_reads_converse_stream_events_in_their_event_stream_encoding() {
    let url = bedrock_streaming(StreamScript {
        words: words(8),
        gap: Duration::from_millis(20),
        break_after: None,
        break_when: None,
    })
    .await;
    let items = collect(&bedrock_model_at(&url, Duration::from_secs(5)))
        .await
        .expect("a stream");
    let text: String = items.into_iter().map(|(_, i)| i.expect("no error")).collect();
    assert_eq!(text, words(8).concat());

    let broken = bedrock_streaming(StreamScript {
        words: words(8),
        gap: Duration::from_millis(5),
        break_after: Some(2),
        break_when: None,
    })
    .await;
    let mut items: Vec<_> = collect(&bedrock_model_at(&broken, Duration::from_secs(5)))
        .await
        .expect("a stream")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    let last = items.pop();
    assert!(
        matches!(&last, Some(Err(ModelError::Failed(m))) if m.contains("The model stopped unexpectedly")),
        "{last:?} after {items:?}"
    );
    let text: String = items.into_iter().map(|i| i.expect("chunks before the error")).collect();
    assert_eq!(text, words(2).concat());
}
