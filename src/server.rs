//! The composition root: [`App::build`] connects and migrates the database, binds the listener
//! (port 0 in tests), and starts the HTTP server, the inbox writer and dispatcher, the job
//! workers and the scheduler. [`App::shutdown`] stops them in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::dispatch::{Dispatcher, EventHandlers};
use crate::app::ingest::Ingest;
use crate::app::templates::Templates;
use crate::app::{self, Registrar, Services};
use crate::clock::Clock;
use crate::config::{ConfigError, Settings};
use crate::http::{self, AppState};
use crate::jobs::scheduler::{Recurring, ScheduleError, Scheduler};
use crate::jobs::{self, Registry, WorkerPool};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::wecom::client::{WecomClient, WecomError};
use crate::wecom::crypto::{Crypto, CryptoError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("callback crypto: {0}")]
    Crypto(#[from] CryptoError),
    #[error("WeCom client: {0}")]
    Wecom(#[from] WecomError),
    #[error(transparent)]
    Template(#[from] crate::app::templates::TemplateError),
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What later capabilities plug in: event handlers, job kinds and recurring jobs.
#[derive(Clone, Default)]
pub struct Components {
    pub events: EventHandlers,
    pub jobs: Registry,
    pub recurring: Vec<Recurring>,
    pub clock: Clock,
}

/// A running siyu.
pub struct App {
    addr: SocketAddr,
    store: Store,
    clock: Clock,
    wecom: WecomClient,
    services: Services,
    metrics: Arc<Metrics>,
    grace: Duration,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<()>,
    writer: JoinHandle<()>,
    workers: JoinHandle<()>,
    process_id: String,
    background: Vec<JoinHandle<()>>,
}

impl App {
    pub async fn build(settings: Settings) -> Result<App, AppError> {
        Self::build_with(settings, Components::default()).await
    }

    pub async fn build_with(
        settings: Settings,
        mut components: Components,
    ) -> Result<App, AppError> {
        settings.validate_common()?;
        settings.validate_serve()?;
        app::validate_settings(&settings)
            .map_err(|reason| AppError::Startup(format!("config: {reason}")))?;
        let crypto = Crypto::new(
            settings.wecom.callback_token.expose(),
            settings.wecom.encoding_aes_key.expose(),
            &settings.wecom.corp_id,
        )?;
        let store = Store::connect(&settings.database).await?;
        store.migrate().await?;
        let clock = components.clock.clone();
        let metrics = Arc::new(Metrics::default());
        let wecom = WecomClient::observed(
            &settings.wecom,
            Some(store.clone()),
            clock.clone(),
            Some(metrics.clone()),
        )?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut templates = Templates::load(&settings.templates.dir)?;
        if let Ok(zone) = settings.timezone() {
            templates.set_zone(zone);
        }
        let services = Services::new(
            store.clone(),
            wecom.clone(),
            clock.clone(),
            Arc::new(settings.clone()),
            Arc::new(templates),
        );
        let mut features = Registrar::default();
        app::register_features(&services, &mut features);
        // What the caller brings goes last, so a test can stand in for a built-in handler.
        features
            .events
            .extend(std::mem::take(&mut components.events));
        features.jobs.extend(std::mem::take(&mut components.jobs));
        features.recurring.append(&mut components.recurring);
        components.events = features.events;
        components.jobs = features.jobs;
        components.recurring = features.recurring;
        app::start_features(&services)
            .await
            .map_err(AppError::Startup)?;

        let scheduler = Scheduler::declare(
            store.clone(),
            clock.clone(),
            settings.jobs.clone(),
            &components.recurring,
        )
        .await?;

        let addr = settings.listen_addr()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AppError::Bind { addr, source })?;

        // Room for this many committed batches waiting for the dispatcher; beyond it, new events
        // are stored pending and claimed from the database later (a claim per 256 events). The
        // events waiting in memory are what siyu's memory grows with when the dispatcher lags:
        // 16 batches hold a few thousand at most.
        let (handoff, handed) = tokio::sync::mpsc::channel(16);
        let (ingest, writer) = Ingest::start(
            store.clone(),
            settings.inbox.batch_max,
            (settings.inbox.lease_secs * 1000) as i64,
            clock.clone(),
            handoff,
        );
        if settings.api.token.is_empty() {
            tracing::info!(
                "api.token is empty: /api/v1 takes only users' tokens (siyu users token)"
            );
        }
        let state = AppState {
            store: store.clone(),
            clock: clock.clone(),
            crypto: Arc::new(crypto),
            ingest,
            metrics: metrics.clone(),
            api_token: settings.api.token.clone(),
            body_limit: settings.server.body_limit_bytes,
            services: services.clone(),
            reader: Arc::default(),
        };
        // Every handler turned into its service once, here. `axum::serve` given a plain router
        // does it for each connection: a copy of every route per connection, 150 KB each.
        let router: axum::Router = http::router(state.clone()).with_state(());
        // Held while the server serves, so the audit can read through the routes.
        let reader = http::keep_reader(&state, &router);
        drop(state);
        let mut http_shutdown = shutdown_rx.clone();
        let http = tokio::spawn(async move {
            let _reader = reader;
            let server = axum::serve(listener, router.into_make_service()).with_graceful_shutdown(
                async move {
                    let _ = http_shutdown.wait_for(|stop| *stop).await;
                },
            );
            if let Err(e) = server.await {
                tracing::error!(error = %e, "HTTP server stopped with an error");
            }
        });

        let poll = Duration::from_millis(settings.jobs.poll_interval_ms);
        let dispatcher = Dispatcher {
            store: store.clone(),
            clock: clock.clone(),
            inbox: settings.inbox.clone(),
            poll,
            handlers: components.events,
        };
        let workers = WorkerPool::new(
            store.clone(),
            clock.clone(),
            settings.jobs.clone(),
            components.jobs,
            metrics.clone(),
        );
        let process_id = workers.process_id().to_string();
        let workers = tokio::spawn(workers.run(shutdown_rx.clone()));
        let background = vec![
            tokio::spawn(dispatcher.run(handed, shutdown_rx.clone())),
            tokio::spawn(scheduler.run(shutdown_rx.clone())),
            tokio::spawn(jobs::relay_postgres_notifications(
                store.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(metrics.clone().keep_up(shutdown_rx)),
        ];
        tracing::info!(%addr, database = ?store.kind(), "siyu is listening");
        Ok(App {
            addr,
            store,
            clock,
            wecom,
            services,
            metrics,
            grace: Duration::from_secs(settings.server.shutdown_grace_secs),
            shutdown,
            http,
            writer,
            workers,
            process_id,
            background,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The client for WeCom's API (`wecom.api_base`).
    pub fn wecom(&self) -> &WecomClient {
        &self.wecom
    }

    /// The use-cases' services (for tests and the demo).
    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, lets in-flight requests finish and their events commit, lets workers
    /// finish their jobs, and hands back the leases of any that could not finish in time.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        if tokio::time::timeout_at(deadline, self.http).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        // The router (and with it the last ingest handle) is gone, so the writer drains and stops.
        if tokio::time::timeout_at(deadline, self.writer)
            .await
            .is_err()
        {
            tracing::warn!("the inbox writer did not finish within the grace period");
        }
        let abort = self.workers.abort_handle();
        if tokio::time::timeout_at(deadline, self.workers)
            .await
            .is_err()
        {
            tracing::warn!("jobs still running after the grace period; handing their leases back");
            abort.abort();
            jobs::release_leases(&self.store, &self.clock, &self.process_id).await;
        }
        for task in self.background {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("a background task did not stop within the grace period");
            }
        }
        self.store.close().await;
        tracing::info!("siyu stopped");
    }

    /// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
