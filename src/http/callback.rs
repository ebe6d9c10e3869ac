//! `GET|POST /wecom/callback` (wecom/callback.md §1.6, §1.7, §4). The POST answers 200 only
//! after the event is durably in the inbox; WeCom itself is never called from here.

use axum::body::{Body, to_bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::app::dispatch::UNPARSED_KIND;
use crate::app::ingest::dedupe_key;
use crate::metrics::{CallbackOutcome, Rejection};
use crate::store::inbox::{InsertOutcome, NewInboxEvent};
use crate::wecom::crypto::{self, CryptoError};
use crate::wecom::event;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_url, receive))
}

/// What WeCom signs a callback with. All are required (`echostr` only on the URL check); a
/// request without one answers 400. Declared optional so a missing one is logged as such.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    /// SHA-1 over the token, `timestamp`, `nonce` and the encrypted payload.
    #[param(required = true)]
    msg_signature: Option<String>,
    /// Unix seconds, as WeCom sent it.
    #[param(required = true)]
    timestamp: Option<String>,
    #[param(required = true)]
    nonce: Option<String>,
    /// The encrypted challenge of the URL check.
    #[param(required = true)]
    echostr: Option<String>,
}

struct Signed {
    signature: String,
    timestamp: String,
    nonce: String,
}

impl CallbackQuery {
    fn signed(self) -> Option<(Signed, Option<String>)> {
        Some((
            Signed {
                signature: self.msg_signature.filter(|s| !s.is_empty())?,
                timestamp: self.timestamp.filter(|s| !s.is_empty())?,
                nonce: self.nonce.filter(|s| !s.is_empty())?,
            },
            self.echostr,
        ))
    }
}

/// Refuses a request: 400 with an empty body, the reason in the log and the metrics.
fn reject(state: &AppState, why: Rejection, detail: &dyn std::fmt::Display) -> Response {
    state.metrics.rejected(why);
    tracing::warn!(reason = why.as_str(), %detail, "callback rejected");
    let status = match why {
        Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::BadSignature => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    status.into_response()
}

fn crypto_rejection(e: &CryptoError) -> Rejection {
    match e {
        CryptoError::ReceiveIdMismatch { .. } => Rejection::WrongReceiver,
        _ => Rejection::DecryptFailed,
    }
}

/// The URL check WeCom makes when an admin saves the callback settings: answer the decrypted
/// echostr exactly, as text/plain (no quotes, no newline).
///
/// Refusals have an empty body; the reason goes to the log and to a metric.
#[utoipa::path(
    get,
    path = "/wecom/callback",
    tag = "wecom",
    security(()),
    params(CallbackQuery),
    responses(
        (status = 200, description = "the decrypted echostr, exactly", content_type = "text/plain; charset=utf-8", body = String),
        (status = 400, description = "a parameter is missing, or echostr does not decrypt for this corp (empty body)"),
        (status = 403, description = "the signature is wrong (empty body)"),
    )
)]
async fn verify_url(
    State(state): State<AppState>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    let Some((signed, Some(echostr))) = query.ok().and_then(|Query(q)| q.signed()) else {
        return reject(
            &state,
            Rejection::MissingParams,
            &"msg_signature, timestamp, nonce and echostr are required",
        );
    };
    if let Err(e) = state.crypto.verify_signature(
        &signed.signature,
        &signed.timestamp,
        &signed.nonce,
        &echostr,
    ) {
        return reject(&state, Rejection::BadSignature, &e);
    }
    match state.crypto.decrypt_checked(&echostr) {
        Ok(plain) => {
            state.metrics.url_check();
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], plain).into_response()
        }
        Err(e) => reject(&state, crypto_rejection(&e), &e),
    }
}

/// An event from WeCom: answered 200 once it is durably in the inbox (a redelivery too).
///
/// A member's text to the app is answered with an encrypted passive reply; anything else gets
/// an empty 200. Refusals have an empty body; the reason goes to the log and to a metric.
#[utoipa::path(
    post,
    path = "/wecom/callback",
    tag = "wecom",
    security(()),
    params(
        ("msg_signature" = String, Query, description = "SHA-1 over the token, `timestamp`, `nonce` and the envelope's `Encrypt`"),
        ("timestamp" = String, Query, description = "Unix seconds, as WeCom sent it"),
        ("nonce" = String, Query),
    ),
    request_body(
        content = String,
        content_type = "application/xml",
        description = "WeCom's envelope: `<xml><ToUserName>…</ToUserName><Encrypt>…</Encrypt><AgentID>…</AgentID></xml>`"
    ),
    responses(
        (status = 200, description = "stored; an empty body, or (to a member's text) the encrypted passive reply", content_type = "application/xml; charset=utf-8", body = String),
        (status = 400, description = "a parameter is missing, or the body is no envelope, or does not decrypt for this corp (empty body)"),
        (status = 403, description = "the signature is wrong (empty body)"),
        (status = 413, description = "the body is over `server.body_limit_bytes` (empty body)"),
        (status = 500, description = "not stored; WeCom will retry (empty body)"),
    )
)]
async fn receive(
    State(state): State<AppState>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    body: Body,
) -> Response {
    let arrived = std::time::Instant::now();
    let metrics = state.metrics.clone();
    let mut answered = CallbackOutcome::Rejected;
    let response = store_callback(State(state), query, body, &mut answered).await;
    metrics.callback_answered(answered, arrived.elapsed());
    response
}

/// [`receive`]'s work; `answered` says how it ended once the callback proved authentic.
async fn store_callback(
    State(state): State<AppState>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    body: Body,
    answered: &mut CallbackOutcome,
) -> Response {
    state.metrics.received();
    let Some((signed, _)) = query.ok().and_then(|Query(q)| q.signed()) else {
        return reject(
            &state,
            Rejection::MissingParams,
            &"msg_signature, timestamp and nonce are required",
        );
    };
    let bytes = match to_bytes(body, state.body_limit).await {
        Ok(b) => b,
        Err(e) => return reject(&state, Rejection::TooLarge, &e),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return reject(&state, Rejection::BadEnvelope, &"body is not UTF-8");
    };
    let envelope = match crypto::parse_envelope(text) {
        Ok(env) => env,
        Err(e) => return reject(&state, Rejection::BadEnvelope, &e),
    };
    if let Err(e) = state.crypto.verify_signature(
        &signed.signature,
        &signed.timestamp,
        &signed.nonce,
        &envelope.encrypt,
    ) {
        return reject(&state, Rejection::BadSignature, &e);
    }
    let xml = match state.crypto.decrypt_checked(&envelope.encrypt) {
        Ok(xml) => xml,
        Err(e) => return reject(&state, crypto_rejection(&e), &e),
    };
    // PostgreSQL's text cannot hold U+0000 (and XML allows none): an authentic callback with one
    // is kept with each replaced, not refused with a 500 that WeCom would retry for ever.
    let xml = if xml.contains('\0') {
        tracing::warn!("authentic callback holds U+0000; storing it with U+FFFD in its place");
        xml.replace('\0', "\u{FFFD}")
    } else {
        xml
    };
    // Authentic from here on. An event we cannot parse is still stored (as `unparsed`) rather
    // than refused: refusing would make WeCom retry and then drop it.
    let parsed = event::parse(&xml);
    let (kind, msg_id, key) = match &parsed {
        Ok(ev) => (
            ev.kind(),
            ev.msg_id().map(str::to_string),
            dedupe_key(state.crypto.receive_id(), Some(ev), &xml),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "authentic callback does not parse; storing it as unparsed");
            (
                UNPARSED_KIND.to_string(),
                None,
                dedupe_key(state.crypto.receive_id(), None, &xml),
            )
        }
    };
    let event = NewInboxEvent {
        dedupe_key: key,
        kind,
        msg_id,
        xml,
        received_at: state.clock.now_ms(),
    };
    // A member's question is answered here; the event itself goes on to the dispatcher.
    let question = match &parsed {
        Ok(event::Event::Text {
            header, content, ..
        }) => Some((header.clone(), content.clone())),
        _ => None,
    };
    match state.ingest.submit(event, parsed.ok()).await {
        Ok(outcome) => {
            match outcome {
                InsertOutcome::Stored(_) => {
                    state.metrics.stored();
                    *answered = CallbackOutcome::Stored;
                }
                InsertOutcome::Duplicate(id) => {
                    state.metrics.duplicate();
                    *answered = CallbackOutcome::Duplicate;
                    tracing::debug!(id, "duplicate callback acknowledged");
                }
            }
            // A member asking the app about a customer gets the answer in the reply itself
            // (answered again on a redelivery: WeCom retried because it saw no answer).
            match question {
                // Boxed: the answer's future is large, and inline it would make every callback's
                // future (in memory while its event commits) that large too.
                Some((head, content)) => {
                    Box::pin(staff_reply(&state, &signed, head, &content)).await
                }
                None => StatusCode::OK.into_response(),
            }
        }
        Err(e) => {
            state.metrics.failed();
            *answered = CallbackOutcome::Failed;
            tracing::error!(error = %e, "callback not stored; WeCom will retry");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The passive encrypted reply (callback.md §1.7) answering a member's text to the app. If the
/// answer cannot be made, an empty 200 still acknowledges the stored message.
async fn staff_reply(
    state: &AppState,
    signed: &Signed,
    head: event::Header,
    content: &str,
) -> Response {
    let Some(member) = head
        .from_user_name
        .filter(|m| !m.is_empty())
        .map(crate::ids::UserId::from)
    else {
        return StatusCode::OK.into_response();
    };
    let text = match crate::app::staff::answer(&state.services, &member, content).await {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(error = %e, "could not answer a member's question");
            return StatusCode::OK.into_response();
        }
    };
    let reply = format!(
        "<xml><ToUserName><![CDATA[{member}]]></ToUserName><FromUserName><![CDATA[{corp}]]></FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content></xml>",
        corp = state.crypto.receive_id(),
        now = state.clock.now_ms() / 1000,
        content = text.replace("]]>", "]]]]><![CDATA[>"),
    );
    let body = state
        .crypto
        .encrypted_reply(&reply, &signed.timestamp, &signed.nonce);
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}
