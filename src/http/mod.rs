//! HTTP: the callback, the operator API, health and metrics. Routers and extractors only; the
//! work happens in `app`.
//!
//! Error policy: a request that is the caller's fault gets a 4xx. For WeCom's callback the body
//! says nothing (a forger learns nothing); the reason goes to the log and to a metric. For the
//! JSON API the body is `{"error": "..."}` naming what is wrong. Our own failures are a 500 whose
//! detail goes only to the log.

mod api;
mod callback;
mod ops;

use std::sync::Arc;

use axum::Router;

use crate::app::ingest::Ingest;
use crate::clock::Clock;
use crate::config::Secret;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::wecom::crypto::Crypto;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Clock,
    pub crypto: Arc<Crypto>,
    pub ingest: Ingest,
    pub metrics: Arc<Metrics>,
    pub api_token: Secret,
    pub body_limit: usize,
    pub services: crate::app::Services,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(callback::router())
        .merge(ops::router())
        .nest("/api/v1", api::router(state.clone()))
        .with_state(state)
        .layer(axum::middleware::from_fn(ops::trace_requests))
}
