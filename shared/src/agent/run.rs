//! The agent run: model → tool calls → results → model, until a reply without tool calls, the
//! step limit or the deadline. Every step is handed to [`Steps`] as it completes (the assistant
//! message with its calls, then each result as its call ends), so a run cut short resumes from
//! what was stored: a call whose result is stored is never made again, one without is made
//! again with the same idempotency key. The loop holds no connection: [`Steps`] takes one per
//! statement, and none is held while the model or a tool works.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

use super::mcp::{Hints, Mcp, McpError, Source};
use super::tool_call::{self, idempotency_key, ToolEndpoint, ToolError, ToolPolicy, ToolRequest};
use crate::model::{
    normalized, AgentModel, ChatMessage, ModelError, ModelRequest, Reply, Role, ToolCall, ToolSpec, Usage,
};

/// What the model is told when a person rejected a call.
pub const REJECTED: &str = r#"{"error":"rejected by the user"}"#;

/// What the model is told when a person skipped a call whose outcome was unknown.
pub const SKIPPED: &str =
    r#"{"error":"skipped by the user: the call was in flight when the run stopped, and its outcome is unknown"}"#;

/// A tool of the agent: what the model sees of it, where it is and its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub spec: ToolSpec,
    /// The tool's URL (an MCP tool: its server's).
    pub url: String,
    pub requires_approval: bool,
    pub timeout: Duration,
    /// A tool of an MCP server (`None`: an HTTP tool of `agent_tools`).
    pub mcp: Option<McpTarget>,
}

/// Where an MCP tool is: its source, its name there and what it says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpTarget {
    pub source: Arc<Source>,
    pub tool: String,
    pub hints: Hints,
}

/// How tools are called: the client with its outbound rules, the policy, the signing secret
/// (`None`: HTTP tools are not called, the model is told so) and the MCP client.
#[derive(Clone)]
pub struct Caller {
    pub client: reqwest::Client,
    pub policy: Arc<ToolPolicy>,
    pub secret: Option<Arc<[u8]>>,
    pub mcp: Arc<Mcp>,
}

/// What the database remembers of a call between attempts (`agent_run_calls.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Sent, and not safe to send again (an MCP tool neither read-only nor idempotent).
    Started,
    AwaitingApproval,
    /// The run paused for a person to retry (approve) or skip (reject) it.
    OutcomeUnknown,
}

impl CallState {
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "started" => Some(Self::Started),
            "awaiting_approval" => Some(Self::AwaitingApproval),
            "outcome_unknown" => Some(Self::OutcomeUnknown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::AwaitingApproval => "awaiting_approval",
            Self::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// How the model is called: a whole reply, or streamed (its text forwarded as
/// [`Event::Delta`]s as it is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    Whole,
    Streamed,
}

/// The bounds of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Model calls in a run (`AGENT_MAX_STEPS`), across its attempts.
    pub max_steps: u32,
    /// Tool calls of one step made at once.
    pub parallel_calls: usize,
    /// When this attempt must stop (the task's budget, the request's deadline).
    pub deadline: Instant,
    pub calls: Calls,
}

/// A person's decision on a call that needs approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
}

/// One run: who runs it, the conversation so far (the stored steps of earlier attempts
/// included), the steps already made and what they cost, and the decisions on its calls.
pub struct Run<'a> {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// The run's user (`None`: an operator's task).
    pub user_id: Option<Uuid>,
    pub instructions: &'a str,
    pub history: Vec<ChatMessage>,
    /// Model calls stored by earlier attempts.
    pub steps: u32,
    /// What they cost (`None`: unknown or none yet).
    pub usage: Option<Usage>,
    pub decisions: HashMap<String, Decision>,
    /// What earlier attempts left of its calls (`agent_run_calls`).
    pub calls: HashMap<String, CallState>,
}

/// Where the steps go as they complete.
pub trait Steps: Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The assistant message of step `step` (its text, its calls, its usage and model).
    fn assistant(&self, step: u32, reply: &Reply) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The result of `call`, made in step `step`.
    fn result(&self, step: u32, call: &ToolCall, content: &str)
        -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// `call` is about to be sent and could not safely be sent again: stored before it is, so
    /// that a later attempt finding no result knows its outcome is unknown.
    fn started(&self, call: &ToolCall) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How a run ended (for now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A reply without tool calls: the run's answer.
    Answered { text: String, model: Option<String> },
    /// The step limit came with the model still calling tools.
    StepLimit,
    /// Calls wait for a person: the run pauses until each is approved or rejected.
    /// `unknown`: calls in flight when an earlier attempt stopped, that cannot safely be made
    /// again (approving one retries it, rejecting skips it).
    AwaitingApproval {
        calls: Vec<ToolCall>,
        unknown: Vec<ToolCall>,
    },
}

/// What a run ended with, what all its steps cost (`None`: not known for every step) and how
/// many steps it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub end: End,
    pub usage: Option<Usage>,
    pub steps: u32,
}

/// Why an attempt stopped before an end: the run resumes from its stored steps next time.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + 'static> {
    #[error("the model failed")]
    Model(#[source] ModelError),
    #[error("a step could not be stored")]
    Store(#[source] E),
    #[error("the deadline came before the run ended")]
    Deadline,
}

/// Something that happened in a run, for whoever shows it live (the stream's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A piece of the model's text, as it is written (streamed calls only).
    Delta(String),
    ToolCall(ToolCall),
    ToolResult {
        id: String,
        content: String,
    },
}

/// Runs `run` to its end, its steps stored by `steps`, events sent to `events` (when given).
/// Without a `caller` (no signing secret) no tool is called: each call is answered with an
/// error saying so.
pub async fn drive<S: Steps>(
    model: &dyn AgentModel,
    tools: &[Tool],
    caller: Option<&Caller>,
    limits: Limits,
    mut run: Run<'_>,
    steps: &S,
    events: Option<&tokio::sync::mpsc::UnboundedSender<Event>>,
) -> Result<Outcome, RunError<S::Error>> {
    let specs: Vec<ToolSpec> = tools.iter().map(|t| t.spec.clone()).collect();
    let mut usage = run.usage;
    let mut known = run.steps == 0 || run.usage.is_some();
    loop {
        // Calls of the last step still without a result (a run resumed, or paused).
        let open = open_calls(&run.history);
        if !open.is_empty() {
            let step = run.steps;
            let (mut waiting, mut unknown, mut ready) = (Vec::new(), Vec::new(), Vec::new());
            for call in open {
                let decided = run.decisions.contains_key(&call.id);
                match run.calls.get(&call.id) {
                    // Sent by an attempt that stopped before its result, and not repeatable.
                    Some(CallState::Started) if !repeatable(tools, &call) => unknown.push(call),
                    Some(CallState::OutcomeUnknown) if !decided => unknown.push(call),
                    _ if needs_approval(tools, &call) && !decided => waiting.push(call),
                    _ => ready.push(call),
                }
            }
            let results = call_all(tools, caller, limits, &run, step, &ready, steps, events).await?;
            run.history.extend(results);
            if !waiting.is_empty() || !unknown.is_empty() {
                return Ok(Outcome {
                    end: End::AwaitingApproval {
                        calls: waiting,
                        unknown,
                    },
                    usage: usage.filter(|_| known),
                    steps: run.steps,
                });
            }
            continue;
        }
        if run.steps >= limits.max_steps {
            return Ok(Outcome {
                end: End::StepLimit,
                usage: usage.filter(|_| known),
                steps: run.steps,
            });
        }
        let request = ModelRequest {
            instructions: run.instructions.to_string(),
            messages: normalized(run.history.clone()),
            tools: specs.clone(),
        };
        let call = async {
            match limits.calls {
                Calls::Whole => model.complete(&request).await,
                Calls::Streamed => streamed(model, &request, events).await,
            }
        };
        let reply = match tokio::time::timeout_at(limits.deadline, call).await {
            Err(_) => return Err(RunError::Deadline),
            Ok(reply) => reply.map_err(RunError::Model)?,
        };
        run.steps += 1;
        steps.assistant(run.steps, &reply).await.map_err(RunError::Store)?;
        match reply.usage {
            Some(u) => {
                let sum = usage.unwrap_or_default();
                usage = Some(Usage {
                    input_tokens: sum.input_tokens.saturating_add(u.input_tokens),
                    output_tokens: sum.output_tokens.saturating_add(u.output_tokens),
                });
            }
            None => known = false,
        }
        if reply.tool_calls.is_empty() {
            return Ok(Outcome {
                end: End::Answered {
                    text: reply.text,
                    model: reply.model,
                },
                usage: usage.filter(|_| known),
                steps: run.steps,
            });
        }
        if let Some(events) = events {
            for call in &reply.tool_calls {
                let _ = events.send(Event::ToolCall(call.clone()));
            }
        }
        run.history.push(ChatMessage::calls(reply.text, reply.tool_calls));
    }
}

/// A streamed model call read to its end, its text forwarded to `events` as it comes: the
/// whole reply, its tool calls and usage.
async fn streamed(
    model: &dyn AgentModel,
    request: &ModelRequest,
    events: Option<&tokio::sync::mpsc::UnboundedSender<Event>>,
) -> Result<Reply, ModelError> {
    let mut reply = model.stream_reply(request).await?;
    let mut text = String::new();
    while let Some(chunk) = reply.text.next().await {
        let chunk = chunk?;
        text.push_str(&chunk);
        if let Some(events) = events {
            let _ = events.send(Event::Delta(chunk));
        }
    }
    Ok(Reply {
        text,
        tool_calls: reply.tool_calls(),
        usage: reply.usage(),
        model: reply.model,
    })
}

/// The calls of the history's last assistant message that no result answers yet.
pub fn open_calls(history: &[ChatMessage]) -> Vec<ToolCall> {
    let Some(at) = history.iter().rposition(|m| m.role == Role::Assistant) else {
        return Vec::new();
    };
    let answered: Vec<&str> = history[at + 1..]
        .iter()
        .filter_map(|m| m.tool_call_id.as_deref())
        .collect();
    history[at]
        .tool_calls
        .iter()
        .filter(|c| !answered.contains(&c.id.as_str()))
        .cloned()
        .collect()
}

fn needs_approval(tools: &[Tool], call: &ToolCall) -> bool {
    tools.iter().any(|t| t.spec.name == call.name && t.requires_approval)
}

/// Whether `call` may be sent again when an earlier attempt's outcome is unknown: an HTTP tool
/// (it dedupes by its Idempotency-Key), or an MCP tool that says it is read-only or idempotent.
fn repeatable(tools: &[Tool], call: &ToolCall) -> bool {
    tools
        .iter()
        .find(|t| t.spec.name == call.name)
        .is_none_or(|t| t.mcp.as_ref().is_none_or(|m| m.hints.repeatable()))
}

/// Makes `calls` (step `step`) at most `limits.parallel_calls` at once, storing each result as
/// its call ends; the results, as tool messages, in the order they ended.
#[allow(clippy::too_many_arguments)]
async fn call_all<S: Steps>(
    tools: &[Tool],
    caller: Option<&Caller>,
    limits: Limits,
    run: &Run<'_>,
    step: u32,
    calls: &[ToolCall],
    steps: &S,
    events: Option<&tokio::sync::mpsc::UnboundedSender<Event>>,
) -> Result<Vec<ChatMessage>, RunError<S::Error>> {
    // Owned calls: a future borrowing the slice's items is not `Send` for every lifetime.
    let mut done = futures_util::stream::iter(calls.to_vec())
        .map(|call| async move {
            let sent = run.decisions.get(&call.id) != Some(&Decision::Rejected);
            if sent && caller.is_some() && !repeatable(tools, &call) {
                steps.started(&call).await.map_err(RunError::Store)?;
            }
            // A call the attempt's deadline cut has no result: the next attempt makes it again
            // (or, when it cannot be made again, asks a person).
            let content = one(tools, caller, limits, run, step, &call)
                .await
                .ok_or(RunError::Deadline)?;
            steps.result(step, &call, &content).await.map_err(RunError::Store)?;
            if let Some(events) = events {
                let _ = events.send(Event::ToolResult {
                    id: call.id.clone(),
                    content: content.clone(),
                });
            }
            Ok::<_, RunError<S::Error>>(ChatMessage::tool_result(&call.id, content))
        })
        .buffer_unordered(limits.parallel_calls.max(1));
    let mut results = Vec::with_capacity(calls.len());
    while let Some(result) = done.next().await {
        results.push(result?);
    }
    Ok(results)
}

/// One call's result as the model sees it: the tool's JSON answer, or `{"error": ...}`; `None`
/// when the attempt's deadline came first.
async fn one(
    tools: &[Tool],
    caller: Option<&Caller>,
    limits: Limits,
    run: &Run<'_>,
    step: u32,
    call: &ToolCall,
) -> Option<String> {
    if run.decisions.get(&call.id) == Some(&Decision::Rejected) {
        return Some(if run.calls.get(&call.id) == Some(&CallState::OutcomeUnknown) {
            SKIPPED.to_string()
        } else {
            REJECTED.to_string()
        });
    }
    let Some(tool) = tools.iter().find(|t| t.spec.name == call.name) else {
        return Some(error(&format!("there is no tool named {:?}", call.name)));
    };
    if !call.arguments.is_object() {
        return Some(error("the arguments are not a JSON object"));
    }
    let Some(caller) = caller else {
        return Some(error("tool calls are not configured on this deployment (no client)"));
    };
    let left = limits.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return None;
    }
    if let Some(target) = &tool.mcp {
        let called = caller
            .mcp
            .call(&target.source, &target.tool, &call.arguments, tool.timeout.min(left));
        return match called.await {
            Ok(answer) => Some(answer.to_string()),
            Err(McpError::TimedOut(_)) if tool.timeout > left => None,
            Err(e) => {
                tracing::info!(tool = %call.name, error = %crate::telemetry::Chain(&e), "the MCP call gave no result");
                Some(e.as_result().to_string())
            }
        };
    }
    let Some(secret) = &caller.secret else {
        return Some(error(
            "tool calls are not configured on this deployment (AGENT_TOOL_SIGNING_SECRET is unset)",
        ));
    };
    let endpoint = ToolEndpoint {
        url: &tool.url,
        timeout: tool.timeout.min(left),
    };
    let request = ToolRequest {
        tool_call_id: &call.id,
        name: &call.name,
        arguments: &call.arguments,
        agent_id: run.agent_id,
        user_id: run.user_id,
        run_id: run.id,
    };
    let key = idempotency_key(run.id, step, &call.id);
    match tool_call::call(&caller.client, &caller.policy, secret, &endpoint, &request, &key).await {
        Ok(answer) => Some(answer.to_string()),
        Err(ToolError::TimedOut(_)) if tool.timeout > left => None,
        Err(e) => {
            tracing::info!(tool = %call.name, error = %crate::telemetry::Chain(&e), "the tool call gave no result");
            Some(ToolError::as_result(&e).to_string())
        }
    }
}

fn error(why: &str) -> String {
    json!({ "error": why }).to_string()
}

/// The text of a stored tool result, as JSON (what is not JSON stays a string).
pub fn result_json(content: &str) -> Value {
    serde_json::from_str(content).unwrap_or_else(|_| Value::String(content.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// A model that answers with the next of its replies, recording what it is asked.
    struct Scripted {
        replies: Mutex<Vec<Reply>>,
        asked: Mutex<Vec<ModelRequest>>,
    }

    #[async_trait]
    impl AgentModel for Scripted {
        async fn generate(&self, _: &ModelRequest) -> Result<String, ModelError> {
            Err(ModelError::Failed("complete only".into()))
        }

        async fn complete(&self, request: &ModelRequest) -> Result<Reply, ModelError> {
            self.asked.lock().unwrap().push(request.clone());
            let mut replies = self.replies.lock().unwrap();
            Ok(if replies.len() > 1 {
                replies.remove(0)
            } else {
                replies[0].clone()
            })
        }
    }

    fn scripted(replies: Vec<Reply>) -> Scripted {
        Scripted {
            replies: Mutex::new(replies),
            asked: Mutex::default(),
        }
    }

    #[derive(Default)]
    struct Stored(Mutex<Vec<String>>);

    impl Steps for Stored {
        type Error = std::io::Error;

        async fn assistant(&self, step: u32, reply: &Reply) -> Result<(), Self::Error> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{step}: assistant {} call(s)", reply.tool_calls.len()));
            Ok(())
        }

        async fn result(&self, step: u32, call: &ToolCall, content: &str) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(format!("{step}: {} -> {content}", call.id));
            Ok(())
        }

        async fn started(&self, call: &ToolCall) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(format!("started {}", call.id));
            Ok(())
        }
    }

    fn calls(ids: &[&str], name: &str, arguments: &Value) -> Reply {
        Reply {
            text: String::new(),
            tool_calls: ids
                .iter()
                .map(|id| ToolCall {
                    id: (*id).into(),
                    name: name.into(),
                    arguments: arguments.clone(),
                })
                .collect(),
            usage: Some(Usage {
                input_tokens: 10,
                output_tokens: 2,
            }),
            model: Some("m".into()),
        }
    }

    fn answer(text: &str) -> Reply {
        Reply::text(
            text.into(),
            Some(Usage {
                input_tokens: 20,
                output_tokens: 5,
            }),
            Some("m".into()),
        )
    }

    fn tool(name: &str, requires_approval: bool) -> Tool {
        Tool {
            spec: ToolSpec {
                name: name.into(),
                description: "a tool".into(),
                parameters: json!({"type": "object"}),
            },
            // Nothing listens there: a call that is made gives a transport error.
            url: "http://127.0.0.1:9/tool".into(),
            requires_approval,
            timeout: Duration::from_secs(2),
            mcp: None,
        }
    }

    fn caller() -> Caller {
        let policy = ToolPolicy {
            allow_loopback: true,
            allowed_hosts: Vec::new(),
            max_response_bytes: 1024,
        };
        let policy = Arc::new(policy);
        Caller {
            client: tool_call::client(&policy).unwrap(),
            mcp: Arc::new(Mcp::new(policy.clone(), Duration::from_secs(60)).unwrap()),
            policy,
            secret: Some(Arc::from(&b"secret"[..])),
        }
    }

    fn limits(max_steps: u32) -> Limits {
        Limits {
            max_steps,
            parallel_calls: 4,
            deadline: Instant::now() + Duration::from_secs(10),
            calls: Calls::Whole,
        }
    }

    fn run(history: Vec<ChatMessage>, steps: u32) -> Run<'static> {
        Run {
            id: Uuid::nil(),
            agent_id: Uuid::nil(),
            user_id: None,
            instructions: "be useful",
            history,
            steps,
            usage: None,
            decisions: HashMap::new(),
            calls: HashMap::new(),
        }
    }

    fn prompt() -> Vec<ChatMessage> {
        vec![ChatMessage::text(Role::User, "go")]
    }

    #[tokio::test]
    async fn unknown_tools_and_arguments_that_are_not_an_object_are_answered_with_errors_and_the_run_ends() {
        let model = scripted(vec![
            calls(&["a"], "nope", &json!({})),
            calls(&["b"], "lookup", &json!("{broken")),
            answer("done"),
        ]);
        let stored = Stored::default();
        let outcome = drive(
            &model,
            &[tool("lookup", false)],
            Some(&caller()),
            limits(8),
            run(prompt(), 0),
            &stored,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            outcome.end,
            End::Answered {
                text: "done".into(),
                model: Some("m".into())
            }
        );
        assert_eq!(outcome.steps, 3);
        assert_eq!(
            outcome.usage,
            Some(Usage {
                input_tokens: 40,
                output_tokens: 9
            }),
            "usage sums over the steps"
        );
        assert_eq!(
            *stored.0.lock().unwrap(),
            vec![
                "1: assistant 1 call(s)".to_string(),
                r#"1: a -> {"error":"there is no tool named \"nope\""}"#.to_string(),
                "2: assistant 1 call(s)".to_string(),
                r#"2: b -> {"error":"the arguments are not a JSON object"}"#.to_string(),
                "3: assistant 0 call(s)".to_string(),
            ]
        );
        let last = model.asked.lock().unwrap().last().unwrap().clone();
        assert_eq!(last.tools.len(), 1);
        assert_eq!(last.messages.len(), 5, "prompt, two calls and their results");
    }

    #[tokio::test]
    async fn a_model_that_calls_tools_forever_stops_at_the_step_limit() {
        let model = scripted(vec![calls(&["x"], "nope", &json!({}))]);
        let stored = Stored::default();
        let outcome = drive(&model, &[], Some(&caller()), limits(3), run(prompt(), 0), &stored, None)
            .await
            .unwrap();
        assert_eq!(outcome.end, End::StepLimit);
        assert_eq!(outcome.steps, 3);
        assert_eq!(model.asked.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_resumed_run_makes_only_the_calls_without_a_stored_result_then_asks_the_model() {
        let stored_step = calls(&["done", "open"], "nope", &json!({}));
        let history = vec![
            ChatMessage::text(Role::User, "go"),
            ChatMessage::calls("", stored_step.tool_calls.clone()),
            ChatMessage::tool_result("done", r#"{"kept":true}"#),
        ];
        let model = scripted(vec![answer("finished")]);
        let stored = Stored::default();
        let outcome = drive(&model, &[], Some(&caller()), limits(8), run(history, 1), &stored, None)
            .await
            .unwrap();
        assert_eq!(outcome.steps, 2);
        assert_eq!(outcome.usage, None, "the earlier step's usage is not known here");
        let log = stored.0.lock().unwrap().clone();
        assert_eq!(log.len(), 2);
        assert!(log[0].starts_with("1: open -> "), "{log:?}");
        assert_eq!(log[1], "2: assistant 0 call(s)");
        let asked = model.asked.lock().unwrap()[0].messages.clone();
        assert_eq!(asked[2], ChatMessage::tool_result("done", r#"{"kept":true}"#));
    }

    #[tokio::test]
    async fn a_call_that_needs_approval_pauses_the_run_and_a_rejection_is_what_the_model_sees() {
        let tools = [tool("pay", true)];
        let model = scripted(vec![calls(&["p1"], "pay", &json!({"amount": 5})), answer("ok")]);
        let stored = Stored::default();
        let outcome = drive(
            &model,
            &tools,
            Some(&caller()),
            limits(8),
            run(prompt(), 0),
            &stored,
            None,
        )
        .await
        .unwrap();
        let End::AwaitingApproval { calls: waiting, .. } = outcome.end else {
            panic!("not paused: {outcome:?}");
        };
        assert_eq!(waiting.len(), 1);
        assert_eq!(*stored.0.lock().unwrap(), vec!["1: assistant 1 call(s)".to_string()]);
        let history = vec![
            ChatMessage::text(Role::User, "go"),
            ChatMessage::calls("", waiting.clone()),
        ];
        let mut resumed = run(history, 1);
        resumed.decisions.insert("p1".into(), Decision::Rejected);
        let stored = Stored::default();
        let outcome = drive(&model, &tools, Some(&caller()), limits(8), resumed, &stored, None)
            .await
            .unwrap();
        assert!(matches!(outcome.end, End::Answered { .. }));
        assert_eq!(stored.0.lock().unwrap()[0], format!("1: p1 -> {REJECTED}"));
    }
}
