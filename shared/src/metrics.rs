//! CloudWatch metrics as Embedded Metric Format (EMF) log lines: one JSON object per line on
//! stdout, which CloudWatch Logs turns into metrics without any API call from the function.
//!
//! Every line has the namespace `METRICS_NAMESPACE` (default `AgentBackend`) and one dimension
//! set, `[Function]` ([`DIMENSION`]), the same for every function, so alarms and dashboards can
//! slice by it.
//!
//! A metric is named only by a constant of [`name`] (the only values of [`Name`]), so
//! [`NAMES`] is every name the functions can emit; the tests check the template's alarms and
//! dashboard and `docs/grafana/agent-backend.json` against it.
//!
//! | metric | unit | from |
//! |---|---|---|
//! | `PoolCheckouts` | Count | every function |
//! | `PoolWaitMs` | Milliseconds | every function (mean wait per checkout) |
//! | `PoolWaitMaxMs` | Milliseconds | every function |
//! | `PoolTimeouts` | Count | every function |
//! | `StatementTimeouts` | Count | every function |
//! | `DbErrors` | Count | every function |
//! | `ServerConnections` | Count | health (connections route), scheduler |
//! | `PoolerRefused` | Count | health (connections route): 1 when a fresh client was refused or not admitted by the pooler |
//! | `ConnectionUsagePercent` | Percent | health (connections route), scheduler |
//! | `TasksClaimed`, `TasksCompleted`, `TasksFailed`, `TasksRetried`, `TasksRescued` | Count | scheduler |
//! | `SeriesSuspended` | Count | scheduler (recurring series suspended after failing too often in a row) |
//! | `TasksRemainingDue` | Count | scheduler (due tasks left when a run ends: the backlog) |
//! | `TasksThrottled` | Count | scheduler (tasks handed back because the model provider throttled; no attempt counted) |
//! | `TasksAgentUnavailable` | Count | scheduler (due tasks cancelled unrun: their owner may no longer use their agent) |
//! | `SeriesEnded` | Count | scheduler (recurring series that could not go on: their cron or time zone no longer evaluates) |
//! | `SchedulerRunFailed` | Count | scheduler |
//! | `SchedulerConcurrency` | Count | scheduler (model calls the instance allows at once: every 10 s of a run, and when it ends) |
//! | `TasksInFlight` | Count | scheduler (model calls in flight, every 10 s of a run) |
//! | `TasksInFlightPeak` | Count | scheduler (most model calls in flight at once during a run) |
//! | `SchedulerContinued` | Count | scheduler (1 when a run its deadline stopped with a backlog started the next invocation) |
//! | `TokensIn`, `TokensOut` | Count | chat, chat-stream, scheduler: tokens the provider reported, dimension `Model` only |
//! | `BudgetExhausted` | Count | chat, chat-stream (a message refused: the user's or the agent's daily tokens are spent) |
//! | `TasksDeferred` | Count | scheduler (due tasks moved to their budget's reset, attempts untouched) |
//! | `LivePushFailed` | Count | chat, chat-stream, api, scheduler (live-update pushes that failed or outlived their bound; the request still succeeded) |

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::config::{Env, Setting};
use crate::db::Db;

pub const METRICS_NAMESPACE: Setting = Setting::text(
    "METRICS_NAMESPACE",
    Some("AgentBackend"),
    "CloudWatch namespace of the metrics (Embedded Metric Format lines on stdout)",
);

pub const SETTINGS: &[&Setting] = &[&METRICS_NAMESPACE];

/// The dimension of every metric but tokens: the function's name.
pub const DIMENSION: &str = "Function";
/// The one dimension of `TokensIn`/`TokensOut`: the model (kept low-cardinality: no user, no agent).
pub const MODEL_DIMENSION: &str = "Model";
/// The metrics emitted by [`MODEL_DIMENSION`] (and with no dimension), not by [`DIMENSION`].
pub const BY_MODEL: &[&str] = &[name::TOKENS_IN.as_str(), name::TOKENS_OUT.as_str()];

/// A metric's name: one of the constants in [`name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name(&'static str);

impl Name {
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

macro_rules! metric_names {
    ($($id:ident = $text:literal,)*) => {
        /// The metrics' names (documented in the table above).
        pub mod name {
            use super::Name;
            $(pub const $id: Name = Name($text);)*
        }
        /// Every name a function can emit.
        pub const NAMES: &[&str] = &[$(name::$id.as_str()),*];
    };
}

metric_names! {
    POOL_CHECKOUTS = "PoolCheckouts",
    POOL_WAIT_MS = "PoolWaitMs",
    POOL_WAIT_MAX_MS = "PoolWaitMaxMs",
    POOL_TIMEOUTS = "PoolTimeouts",
    STATEMENT_TIMEOUTS = "StatementTimeouts",
    DB_ERRORS = "DbErrors",
    SERVER_CONNECTIONS = "ServerConnections",
    POOLER_REFUSED = "PoolerRefused",
    CONNECTION_USAGE_PERCENT = "ConnectionUsagePercent",
    TASKS_CLAIMED = "TasksClaimed",
    TASKS_COMPLETED = "TasksCompleted",
    TASKS_FAILED = "TasksFailed",
    TASKS_RETRIED = "TasksRetried",
    TASKS_RESCUED = "TasksRescued",
    SERIES_SUSPENDED = "SeriesSuspended",
    TASKS_REMAINING_DUE = "TasksRemainingDue",
    TASKS_THROTTLED = "TasksThrottled",
    SERIES_ENDED = "SeriesEnded",
    TASKS_AGENT_UNAVAILABLE = "TasksAgentUnavailable",
    SCHEDULER_RUN_FAILED = "SchedulerRunFailed",
    SCHEDULER_CONCURRENCY = "SchedulerConcurrency",
    TASKS_IN_FLIGHT = "TasksInFlight",
    TASKS_IN_FLIGHT_PEAK = "TasksInFlightPeak",
    SCHEDULER_CONTINUED = "SchedulerContinued",
    TOKENS_IN = "TokensIn",
    TOKENS_OUT = "TokensOut",
    BUDGET_EXHAUSTED = "BudgetExhausted",
    TASKS_DEFERRED = "TasksDeferred",
    LIVE_PUSH_FAILED = "LivePushFailed",
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Percent,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Percent => "Percent",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub value: f64,
    pub unit: Unit,
}

impl Metric {
    pub fn count(name: Name, value: u64) -> Self {
        Self {
            name: name.as_str(),
            value: value as f64,
            unit: Unit::Count,
        }
    }
    pub fn ms(name: Name, value: f64) -> Self {
        Self {
            name: name.as_str(),
            value,
            unit: Unit::Milliseconds,
        }
    }
    pub fn percent(name: Name, value: f64) -> Self {
        Self {
            name: name.as_str(),
            value,
            unit: Unit::Percent,
        }
    }
}

/// Where EMF lines go.
#[derive(Debug, Clone, Default)]
pub enum Sink {
    /// Standard output: Lambda sends it to CloudWatch Logs.
    #[default]
    Stdout,
    /// A shared buffer (tests read the lines back).
    Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>),
}

/// Writes EMF lines for one function.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
    function: String,
    sink: Sink,
}

impl Metrics {
    pub fn new(env: &Env, function: &str) -> Self {
        let namespace = env.text(&METRICS_NAMESPACE).unwrap_or_default();
        Self {
            namespace,
            function: function.to_string(),
            sink: Sink::Stdout,
        }
    }

    /// The same writer, sending its lines to `sink`.
    pub fn with_sink(mut self, sink: Sink) -> Self {
        self.sink = sink;
        self
    }

    /// The EMF document for `metrics` (non-finite values are left out).
    pub fn document(&self, metrics: &[Metric]) -> Value {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let metrics: Vec<&Metric> = metrics.iter().filter(|m| m.value.is_finite()).collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()})).collect::<Vec<_>>(),
                }],
            }),
        );
        root.insert(DIMENSION.into(), Value::String(self.function.clone()));
        for m in metrics {
            root.insert(m.name.into(), json!(m.value));
        }
        Value::Object(root)
    }

    /// The EMF document for metrics of one model: dimension `Model` only (a handful of
    /// values), and no dimension at all (the sum over models the daily-tokens alarm reads).
    pub fn model_document(&self, model: &str, metrics: &[Metric]) -> Value {
        let mut document = self.document(metrics);
        // By model, and summed over every model (no dimension) for the daily-tokens alarm.
        document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([[MODEL_DIMENSION], []]);
        if let Value::Object(root) = &mut document {
            root.remove(DIMENSION);
            root.insert(MODEL_DIMENSION.into(), Value::String(model.to_string()));
        }
        document
    }

    /// Writes one EMF line of metrics by model to the sink.
    pub fn emit_for_model(&self, model: &str, metrics: &[Metric]) {
        let line = self.model_document(model, metrics).to_string();
        self.write_line(&line);
    }

    fn write_line(&self, line: &str) {
        match &self.sink {
            Sink::Stdout => {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
            Sink::Buffer(buffer) => {
                if let Ok(mut b) = buffer.lock() {
                    let _ = writeln!(*b, "{line}");
                }
            }
        }
    }

    /// Writes one EMF line to `out`.
    pub fn write_to(&self, out: &mut impl Write, metrics: &[Metric]) {
        let line = self.document(metrics).to_string();
        // A metrics line that cannot be written is not worth failing a request for.
        let _ = writeln!(out, "{line}");
    }

    /// Writes one EMF line to the sink.
    pub fn emit(&self, metrics: &[Metric]) {
        match &self.sink {
            Sink::Stdout => self.write_to(&mut std::io::stdout().lock(), metrics),
            Sink::Buffer(buffer) => {
                if let Ok(mut b) = buffer.lock() {
                    self.write_to(&mut *b, metrics);
                }
            }
        }
    }

    /// The pool's activity since the previous flush, plus `extra`.
    pub fn db_metrics(db: &Db, extra: &[Metric]) -> Vec<Metric> {
        let a = db.take_activity();
        let mut all = vec![
            Metric::count(name::POOL_CHECKOUTS, a.checkouts),
            Metric::ms(name::POOL_WAIT_MS, a.mean_wait_ms),
            Metric::ms(name::POOL_WAIT_MAX_MS, a.max_wait_ms),
            Metric::count(name::POOL_TIMEOUTS, a.pool_timeouts),
            Metric::count(name::STATEMENT_TIMEOUTS, a.statement_timeouts),
            Metric::count(name::DB_ERRORS, a.errors),
        ];
        all.extend_from_slice(extra);
        all
    }

    /// Emits the pool's activity since the previous flush, plus `extra`.
    pub fn flush_db(&self, db: &Db, extra: &[Metric]) {
        self.emit(&Self::db_metrics(db, extra));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_out_by_model_and_summed_never_by_function() {
        let metrics = Metrics::new(&Env::default().with("METRICS_NAMESPACE", "AgentBackend"), "chat");
        let doc = metrics.model_document("gpt-test", &[Metric::count(name::TOKENS_IN, 12)]);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Model"], []])
        );
        assert_eq!(doc["Model"], "gpt-test");
        assert_eq!(doc["TokensIn"], 12.0);
        assert!(doc.get(DIMENSION).is_none(), "no per-function series for tokens: {doc}");
    }
}
