//! HTTP: the callback, the operator API, the console, health and metrics. Routers and extractors only; the
//! work happens in `app`.
//!
//! Error policy: a request that is the caller's fault gets a 4xx. For WeCom's callback the body
//! says nothing (a forger learns nothing); the reason goes to the log and to a metric. For the
//! JSON API the body is `{"error": "..."}` naming what is wrong. Our own failures are a 500 whose
//! detail goes only to the log.

mod api;
mod audit;
mod auth;
mod callback;
mod campaigns;
mod charts;
mod console;
pub mod doc;
mod groups;
mod jobs;
mod media;
mod ops;
mod stats;
mod users;

use std::sync::Arc;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

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
    /// The routes, for reading a resource through the API itself (the audit's before and after).
    /// Weak: the server owns the router (see [`keep_reader`]); a strong handle here would be a
    /// cycle that keeps the state (and the ingest) alive after the server stopped.
    pub reader: Arc<std::sync::OnceLock<std::sync::Weak<Router>>>,
}

/// Every route the binary serves, each registered together with its OpenAPI description.
fn routes(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(doc::ApiDoc::openapi())
        .merge(callback::router())
        .merge(ops::router())
        .nest(
            "/api/v1",
            api::router(
                groups::router()
                    .merge(media::router())
                    .merge(campaigns::router())
                    .merge(jobs::router())
                    .merge(audit::router())
                    .merge(stats::router())
                    .merge(users::router()),
            )
            // Layers run from the last added: the caller and their role are checked, then the
            // change is recorded.
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                audit::record_changes,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                state,
                auth::require_token,
            ))
            .merge(api::document()),
        )
}

/// The OpenAPI document of every route [`router`] serves (what `GET /api/v1/openapi.json`
/// answers).
pub fn openapi(state: AppState) -> utoipa::openapi::OpenApi {
    routes(state).into_openapi()
}

pub fn router(state: AppState) -> Router {
    let (router, openapi) = routes(state.clone()).split_for_parts();
    // A document of plain structs always serializes; should it not, the API still starts and
    // the document says why.
    let document = openapi.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        serde_json::json!({ "error": format!("the OpenAPI document does not serialize: {e}") })
            .to_string()
    });
    router
        .layer(axum::Extension(api::Document(document.into())))
        .merge(console::router(state.clone()))
        .with_state(state)
        .layer(axum::middleware::from_fn(ops::trace_requests))
}

/// Lets the audit read resources through `router` while the returned handle lives: the server
/// holds it for as long as it serves.
pub fn keep_reader(state: &AppState, router: &Router) -> Arc<Router> {
    let shared = Arc::new(router.clone());
    let _ = state.reader.set(Arc::downgrade(&shared));
    shared
}
