//! One warm, tiny pool per Lambda instance, built once in `main` and shared by every
//! invocation. Size, wait, connect and statement bounds come from [`DbSettings`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use super::cancel::CancelTarget;
use super::counters::{DbActivity, DbCounters};
use super::sql::{Bounds, Sql, Tx};
use super::tls;
use super::DbError;
use super::{ConnectionMode, DbSettings};
use crate::config::ConfigError;

/// The instance's database handle: cheap to clone, shares one pool.
#[derive(Clone)]
pub struct Db {
    /// Replaced, not mutated, when fresh credentials arrive.
    pool: Arc<RwLock<Pool>>,
    /// The settings the current pool was built from.
    settings: Arc<RwLock<DbSettings>>,
    bounds: Arc<Bounds>,
    in_flight: Arc<InFlight>,
    credentials: Option<Arc<Credentials>>,
}

/// Fresh database settings (a secret read again), for when the server rejects the password.
pub type SettingsSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<DbSettings, ConfigError>> + Send>> + Send + Sync>;

struct Credentials {
    source: SettingsSource,
    /// At most one refresh per interval: a wrong secret is not fetched in a loop.
    last: tokio::sync::Mutex<Option<Instant>>,
}

const CREDENTIALS_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

fn build_pool(settings: &DbSettings, bounds: &Arc<Bounds>) -> Result<Pool, ConfigError> {
    let manager = Manager::from_config(
        settings.pg_config(),
        bounds.tls.clone(),
        ManagerConfig {
            // `is_closed()` only: no extra round trip per checkout. A connection the server or
            // pooler closed is noticed by its connection task and replaced.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let counted = bounds.clone();
    Pool::builder(manager)
        .post_create(deadpool_postgres::Hook::sync_fn(move |_, _| {
            counted.counters.connects.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }))
        .max_size(settings.pool_max_size)
        .wait_timeout(Some(settings.pool_wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: "database pool".into(),
            reason: e.to_string(),
        })
}

/// The server refused the credentials (a rotated password, say).
fn is_auth_failure(e: &PoolError) -> bool {
    matches!(e, PoolError::Backend(pg) if pg.code().is_some_and(|c| {
        *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    }))
}

/// Requests being handled, so a shutdown can let them finish before closing the pool.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held by a handler for the whole request (see [`Db::begin_request`]).
pub struct RequestGuard(Arc<InFlight>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A snapshot of the pool, for health reports and logs.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

impl Db {
    /// Builds the pool. No connection is opened yet: call [`Db::warm`] in the init phase.
    pub fn new(settings: &DbSettings) -> Result<Self, ConfigError> {
        let bounds = Arc::new(Bounds {
            statement: settings.statement_timeout,
            pool_wait: settings.pool_wait_timeout,
            connect: settings.connect_timeout,
            tls: tls::connector(settings)?,
            cancel_target: CancelTarget {
                host: settings.host.clone(),
                port: settings.port,
            },
            counters: DbCounters::default(),
            mode: settings.connection_mode,
        });
        let pool = build_pool(settings, &bounds)?;
        Ok(Self {
            pool: Arc::new(RwLock::new(pool)),
            settings: Arc::new(RwLock::new(settings.clone())),
            bounds,
            in_flight: Arc::new(InFlight::default()),
            credentials: None,
        })
    }

    /// The same handle, reading fresh settings from `source` when the server rejects the
    /// password, then retrying the checkout once.
    #[must_use]
    pub fn with_credentials(mut self, source: SettingsSource) -> Self {
        self.credentials = Some(Arc::new(Credentials {
            source,
            last: tokio::sync::Mutex::new(None),
        }));
        self
    }

    /// The settings of the current pool (fresh credentials included).
    pub fn settings(&self) -> DbSettings {
        self.settings
            .read()
            .map_or_else(|p| p.into_inner().clone(), |s| s.clone())
    }

    fn pool(&self) -> Pool {
        self.pool.read().map_or_else(|p| p.into_inner().clone(), |p| p.clone())
    }

    /// Replaces the pool with one built from fresh settings. False when not configured, too
    /// soon after the previous refresh, or the new settings are unusable.
    async fn refresh_credentials(&self) -> bool {
        let Some(credentials) = &self.credentials else {
            return false;
        };
        let mut last = credentials.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < CREDENTIALS_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        let fresh = (credentials.source)()
            .await
            .and_then(|s| build_pool(&s, &self.bounds).map(|pool| (pool, s)));
        match fresh {
            Ok((pool, settings)) => {
                let old = match self.pool.write() {
                    Ok(mut current) => std::mem::replace(&mut *current, pool),
                    Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), pool),
                };
                match self.settings.write() {
                    Ok(mut current) => *current = settings,
                    Err(poisoned) => *poisoned.into_inner() = settings,
                }
                old.close();
                tracing::info!("database credentials refreshed");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not refresh the database credentials");
                false
            }
        }
    }

    /// Opens the first connection during the init phase so the first request does not pay for
    /// it. A database that is down now is not fatal: requests will answer 503 until it returns.
    pub async fn warm(&self) {
        if self.bounds.mode == ConnectionMode::Release {
            // Nothing is kept open in release mode: the first request connects.
            return;
        }
        match self.conn().await {
            Ok(_) => tracing::debug!("database pool warmed"),
            Err(e) => {
                tracing::warn!(error = %crate::telemetry::Chain(&e), "could not open the first database connection");
            }
        }
    }

    /// Checks out a connection, waiting at most the pool wait timeout.
    #[tracing::instrument(skip_all, level = "debug")]
    pub async fn conn(&self) -> Result<Conn, DbError> {
        let started = Instant::now();
        let object = match self.pool().get().await {
            Err(e) if is_auth_failure(&e) && self.refresh_credentials().await => self.pool().get().await,
            other => other,
        }
        .map_err(|e| DbError::from_pool(e, self.bounds.pool_wait, self.bounds.connect))
        .inspect_err(|e| self.bounds.counters.error(e))?;
        self.bounds.counters.checkout(started.elapsed());
        tracing::debug!(
            wait_ms = started.elapsed().as_secs_f64() * 1e3,
            "connection checked out"
        );
        Ok(Conn {
            object: Some(object),
            poisoned: AtomicBool::new(false),
            bounds: self.bounds.clone(),
        })
    }

    pub fn status(&self) -> PoolStatus {
        let s = self.pool().status();
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    /// Statements sent through this pool since it was built (`BEGIN`/`COMMIT` included).
    pub fn statements_sent(&self) -> u64 {
        self.bounds.counters.statements.load(Ordering::Relaxed)
    }

    /// Connections opened since the pool was built (release mode opens one per use).
    pub fn connects(&self) -> u64 {
        self.bounds.counters.connects.load(Ordering::Relaxed)
    }

    /// Checkouts, waits and timeouts since the previous metrics flush, without resetting them.
    pub fn recent_activity(&self) -> DbActivity {
        self.bounds.counters.peek()
    }

    /// One fresh client connection, not from the pool, as a new instance would open it (current
    /// credentials, the pool's TLS connector), named `application_name`: what the pooler says.
    pub async fn probe_pooler(&self, application_name: &str, bound: Duration) -> super::probe::Probe {
        let settings = self.settings().with_application_name(application_name);
        super::probe::probe(&settings, self.bounds.tls.clone(), bound).await
    }

    /// How connections are held.
    pub fn connection_mode(&self) -> ConnectionMode {
        self.bounds.mode
    }

    /// In release mode, closes the pool's idle connections: call it before waiting on anything
    /// other than the database (a model) and at the end of each request, so a pooler client is
    /// held only while statements run. Connections checked out stay. A no-op in warm mode.
    pub fn release_idle(&self) {
        if self.bounds.mode == ConnectionMode::Release {
            let released = self.pool().retain(|_, _| false);
            drop(released.removed);
        }
    }

    /// Checkouts, waits, timeouts and errors since the previous call (metrics flushes call it).
    pub fn take_activity(&self) -> DbActivity {
        self.bounds.counters.take()
    }

    /// Marks a request in progress until the guard drops.
    pub fn begin_request(&self) -> RequestGuard {
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.in_flight.clone())
    }

    /// Waits until no request is in progress, at most `limit`. True when drained.
    pub async fn wait_for_requests(&self, limit: Duration) -> bool {
        let drained = async {
            loop {
                let notified = self.in_flight.idle.notified();
                if self.in_flight.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, drained).await.is_ok()
    }

    /// Closes the pool: idle connections are closed now, checked-out ones when returned.
    pub fn close(&self) {
        self.pool().close();
    }
}

/// A checked-out connection. Returned to the pool on drop, or discarded when a statement on it
/// timed out or broke (its state is then unknown).
pub struct Conn {
    object: Option<Object>,
    poisoned: AtomicBool,
    bounds: Arc<Bounds>,
}

impl Conn {
    fn client(&self) -> &tokio_postgres::Client {
        // `object` is only taken in `drop`.
        self.object.as_deref().map_or_else(|| unreachable!(), |w| &**w)
    }

    /// Bounded, pooler-safe statements on this connection.
    pub fn sql(&self) -> Sql<'_, tokio_postgres::Client> {
        let client = self.client();
        Sql::new(client, client.cancel_token(), &self.poisoned, &self.bounds)
    }

    /// Starts an explicit transaction (`BEGIN`, bounded). Rolled back when dropped uncommitted.
    pub async fn transaction(&mut self) -> Result<Tx<'_>, DbError> {
        let Conn {
            object,
            poisoned,
            bounds,
        } = self;
        let client: &mut tokio_postgres::Client = object.as_deref_mut().map_or_else(|| unreachable!(), |w| &mut **w);
        Tx::begin(client, poisoned, bounds).await
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if *self.poisoned.get_mut() {
            if let Some(object) = self.object.take() {
                // Detach from the pool and close: the pool opens a fresh one when needed.
                drop(Object::take(object));
            }
        }
    }
}
