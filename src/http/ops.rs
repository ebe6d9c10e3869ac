//! `/healthz`, `/readyz`, `/metrics` and the request log.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// 200 when the database answers, 503 when it does not. No parameters.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    security(()),
    responses(
        (status = 200, description = "the database answers", content_type = "text/plain; charset=utf-8", body = String, example = "ok"),
        (status = 503, description = "the database does not answer", content_type = "text/plain; charset=utf-8", body = String, example = "database unreachable"),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// 200 when siyu can serve: the database answers and has every migration this binary knows.
/// 503 otherwise (a load balancer sends nothing here until then), saying which. `/healthz` is
/// the liveness check: it stays 200 while migrations are pending. No parameters.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    security(()),
    responses(
        (status = 200, description = "ready", content_type = "text/plain; charset=utf-8", body = String, example = "ready"),
        (status = 503, description = "the database does not answer, or migrations are pending", content_type = "text/plain; charset=utf-8", body = String, example = "migrations pending: 11"),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.pending_migrations().await {
        Ok(pending) if pending.is_empty() => (StatusCode::OK, "ready").into_response(),
        Ok(pending) => {
            let versions: Vec<String> = pending.iter().map(i64::to_string).collect();
            let why = format!("migrations pending: {}", versions.join(", "));
            tracing::warn!(%why, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "ready check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// The Prometheus metrics (text exposition format 0.0.4). No parameters.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    security(()),
    responses(
        (status = 200, description = "the metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 503, description = "a database query behind the metrics failed (empty body)"),
    )
)]
async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render(&state.store, &state.clock).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: database query failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// One span per request labelled with the matched route (not the raw URI: the query carries
/// signatures, and raw paths would be unbounded labels), and one debug line per answer.
pub(super) async fn trace_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = request.method().clone();
    let span = tracing::info_span!("http", %method, %route);
    async move {
        let started = std::time::Instant::now();
        let response = next.run(request).await;
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        response
    }
    .instrument(span)
    .await
}
