//! Bounded, pooler-safe statements.
//!
//! Through a transaction pooler (pgbouncer, Supavisor) named prepared statements break, so only
//! the unnamed-statement calls are offered here: `query_typed` (parameters typed in the call,
//! one round trip: Parse/Bind/Execute/Sync) and `simple_query`. Every call is bounded: past the
//! bound, the statement is cancelled on the server (cancel request through the pooler) and the
//! connection is discarded instead of going back to the pool.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{CancelToken, GenericClient, Row, SimpleQueryMessage};

use super::cancel::{cancel as send_cancel, CancelTarget};
use super::counters::DbCounters;
use super::tls::Tls;
use super::DbError;

/// A statement parameter with its type, as `query_typed` needs it.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

pub(crate) struct Bounds {
    pub statement: Duration,
    pub pool_wait: Duration,
    pub connect: Duration,
    pub tls: Tls,
    pub cancel_target: CancelTarget,
    pub counters: DbCounters,
    pub mode: super::ConnectionMode,
}

/// Statement runner over a connection or a transaction.
pub struct Sql<'a, C> {
    client: &'a C,
    cancel: CancelToken,
    poisoned: &'a AtomicBool,
    bounds: &'a Bounds,
    bound: Duration,
}

impl<'a, C: GenericClient + Sync> Sql<'a, C> {
    pub(crate) fn new(client: &'a C, cancel: CancelToken, poisoned: &'a AtomicBool, bounds: &'a Bounds) -> Self {
        Self {
            client,
            cancel,
            poisoned,
            bounds,
            bound: bounds.statement,
        }
    }

    /// The same runner with another per-statement bound (e.g. a known-slow maintenance query).
    pub fn with_bound(mut self, bound: Duration) -> Self {
        self.bound = bound;
        self
    }

    pub async fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        self.bounded(self.client.query_typed(sql, params)).await
    }

    pub async fn query_one(&self, sql: &str, params: &[Param<'_>]) -> Result<Row, DbError> {
        self.bounded(self.client.query_typed_one(sql, params)).await
    }

    pub async fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, DbError> {
        self.bounded(self.client.query_typed_opt(sql, params)).await
    }

    pub async fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        self.bounded(self.client.execute_typed(sql, params)).await
    }

    /// Simple-protocol statements (no parameters; may hold several statements).
    pub async fn simple(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, DbError> {
        self.bounded(self.client.simple_query(sql)).await
    }

    async fn bounded<T>(&self, fut: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, DbError> {
        bounded(fut, self.bound, &self.cancel, self.poisoned, self.bounds).await
    }
}

async fn bounded<T>(
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    bound: Duration,
    cancel: &CancelToken,
    poisoned: &AtomicBool,
    bounds: &Bounds,
) -> Result<T, DbError> {
    bounds.counters.statements.fetch_add(1, Ordering::Relaxed);
    let result = bounded_inner(fut, bound, cancel, poisoned, bounds).await;
    if let Err(e) = &result {
        bounds.counters.error(e);
    }
    result
}

async fn bounded_inner<T>(
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    bound: Duration,
    cancel: &CancelToken,
    poisoned: &AtomicBool,
    bounds: &Bounds,
) -> Result<T, DbError> {
    match tokio::time::timeout(bound, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let err = DbError::from_pg(e, bound);
            if matches!(err, DbError::Unreachable { .. } | DbError::StatementTimeout(_)) {
                poisoned.store(true, Ordering::Relaxed);
            }
            Err(err)
        }
        Err(_) => {
            poisoned.store(true, Ordering::Relaxed);
            // Stop the statement on the server too, within the connect bound.
            match send_cancel(cancel, &bounds.cancel_target, &bounds.tls, bounds.connect).await {
                Ok(()) => tracing::warn!(bound_ms = bound.as_millis() as u64, "statement timed out; cancelled"),
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::Chain(&e), "statement timed out; cancel request failed");
                }
            }
            Err(DbError::StatementTimeout(bound))
        }
    }
}

/// An explicit transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    cancel: CancelToken,
    poisoned: &'a AtomicBool,
    bounds: &'a Bounds,
}

impl<'a> Tx<'a> {
    pub(crate) async fn begin(
        client: &'a mut tokio_postgres::Client,
        poisoned: &'a AtomicBool,
        bounds: &'a Bounds,
    ) -> Result<Tx<'a>, DbError> {
        let cancel = client.cancel_token();
        let tx = bounded(client.transaction(), bounds.statement, &cancel, poisoned, bounds).await?;
        Ok(Tx {
            tx,
            cancel,
            poisoned,
            bounds,
        })
    }

    pub fn sql(&self) -> Sql<'_, tokio_postgres::Transaction<'a>> {
        Sql::new(&self.tx, self.cancel.clone(), self.poisoned, self.bounds)
    }

    pub async fn commit(self) -> Result<(), DbError> {
        let Tx {
            tx,
            cancel,
            poisoned,
            bounds,
        } = self;
        bounded(tx.commit(), bounds.statement, &cancel, poisoned, bounds).await
    }
}
