//! The balancer in front of the replicas: the fake WeCom's callback URL. Each request goes to a
//! random replica that is up and its answer comes back as it was; a replica that died under it
//! answers 502, and the fake's sender tries again (three tries, as WeCom). While no replica is up
//! it holds a request a few seconds for one to come back, then answers 503.
//!
//! It is also where the soak sees what WeCom saw: every callback it carried, decrypted and keyed
//! as siyu keys it, with whether a replica acknowledged it (200). A share of the acknowledged
//! ones is sent again a moment later, byte for byte, as WeCom does when an answer reached it late.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use tokio::task::JoinHandle;

use super::replicas::Backends;
use crate::app::ingest::dedupe_key_of_xml;
use crate::wecom::crypto::{Crypto, parse_envelope};

/// How long a request waits for a replica to come up when none is.
const PATIENCE: Duration = Duration::from_secs(4);

/// One callback as WeCom sent it, by siyu's dedupe key.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub xml: String,
    /// The event's kind as siyu names it (`change_external_contact.add_external_contact`).
    pub kind: String,
    /// When the first try reached the balancer.
    pub first_sent: SystemTime,
    /// Tries answered 200 (redeliveries included).
    pub acknowledged: u32,
    /// Tries answered otherwise, or not at all.
    pub refused: u32,
}

/// What the balancer counted.
#[derive(Debug, Default)]
pub struct Traffic {
    pub callbacks: HashMap<String, Delivered>,
    /// Posts that were no callback siyu could key (should stay 0).
    pub undecodable: u64,
}

pub struct Balancer {
    backends: Arc<Backends>,
    http: reqwest::Client,
    crypto: Arc<Crypto>,
    corp_id: String,
    redeliver_share: f64,
    pub traffic: Mutex<Traffic>,
    pub redelivered: AtomicU64,
    pub answered_502: AtomicU64,
    pub answered_503: AtomicU64,
}

impl Balancer {
    pub fn new(
        backends: Arc<Backends>,
        crypto: Arc<Crypto>,
        corp_id: &str,
        redeliver_share: f64,
    ) -> Arc<Balancer> {
        Arc::new(Balancer {
            backends,
            // Longer than WeCom's 5 s: the sender gives up first, as it would.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(8)
                .build()
                .unwrap_or_default(),
            crypto,
            corp_id: corp_id.to_owned(),
            redeliver_share,
            traffic: Mutex::default(),
            redelivered: AtomicU64::new(0),
            answered_502: AtomicU64::new(0),
            answered_503: AtomicU64::new(0),
        })
    }

    pub fn traffic(&self) -> std::sync::MutexGuard<'_, Traffic> {
        self.traffic.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves on a free loopback port; returns the callback URL to give the fake.
    pub async fn serve(self: &Arc<Self>) -> std::io::Result<(String, JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = Router::new().fallback(forward).with_state(self.clone());
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "soak balancer stopped");
            }
        });
        Ok((format!("http://{addr}/wecom/callback"), handle))
    }

    /// The callback's key and kind, as siyu will store it.
    fn decode(&self, body: &[u8]) -> Option<(String, String, String)> {
        let envelope = parse_envelope(std::str::from_utf8(body).ok()?).ok()?;
        let xml = self.crypto.decrypt_checked(&envelope.encrypt).ok()?;
        let kind = crate::wecom::event::parse(&xml).ok()?.kind();
        let key = dedupe_key_of_xml(&self.corp_id, &xml);
        Some((key, kind, xml))
    }

    fn record(&self, body: &[u8], acknowledged: bool) -> Option<String> {
        let mut traffic = self.traffic();
        let Some((key, kind, xml)) = self.decode(body) else {
            traffic.undecodable += 1;
            return None;
        };
        let entry = traffic
            .callbacks
            .entry(key.clone())
            .or_insert_with(|| Delivered {
                xml,
                kind,
                first_sent: SystemTime::now(),
                acknowledged: 0,
                refused: 0,
            });
        if acknowledged {
            entry.acknowledged += 1;
        } else {
            entry.refused += 1;
        }
        Some(key)
    }

    /// One request to `backend`: its status and body, or why there was none.
    async fn send(
        &self,
        backend: SocketAddr,
        method: &axum::http::Method,
        path_and_query: &str,
        content_type: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<(StatusCode, Option<HeaderValue>, Bytes), String> {
        let mut request = self
            .http
            .request(method.clone(), format!("http://{backend}{path_and_query}"))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let answer = request.send().await.map_err(|e| e.to_string())?;
        let status =
            StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let ct = answer.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, ct, bytes))
    }

    /// WeCom sends an acknowledged callback again, a moment later, to whichever replica.
    fn redeliver_later(self: &Arc<Self>, path_and_query: String, body: Bytes) {
        let this = self.clone();
        tokio::spawn(async move {
            let pause = Duration::from_millis(rand::thread_rng().gen_range(100..2000));
            tokio::time::sleep(pause).await;
            let Some(backend) = this.backends.pick(PATIENCE).await else {
                return;
            };
            this.redelivered.fetch_add(1, Ordering::Relaxed);
            let content_type = HeaderValue::from_static("text/xml");
            let ok = matches!(
                this.send(
                    backend,
                    &axum::http::Method::POST,
                    &path_and_query,
                    Some(&content_type),
                    body.clone()
                )
                .await,
                Ok((StatusCode::OK, _, _))
            );
            this.record(&body, ok);
        });
    }
}

async fn forward(State(balancer): State<Arc<Balancer>>, request: Request) -> Response {
    let method = request.method().clone();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let Ok(body) = axum::body::to_bytes(request.into_body(), 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let is_callback =
        method == axum::http::Method::POST && path_and_query.starts_with("/wecom/callback");
    let Some(backend) = balancer.backends.pick(PATIENCE).await else {
        balancer.answered_503.fetch_add(1, Ordering::Relaxed);
        if is_callback {
            balancer.record(&body, false);
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "no replica is up").into_response();
    };
    let answer = balancer
        .send(
            backend,
            &method,
            &path_and_query,
            content_type.as_ref(),
            body.clone(),
        )
        .await;
    let acknowledged = matches!(answer, Ok((StatusCode::OK, _, _)));
    if is_callback {
        let key = balancer.record(&body, acknowledged);
        if acknowledged
            && key.is_some()
            && rand::thread_rng().gen_bool(balancer.redeliver_share.clamp(0.0, 1.0))
        {
            balancer.redeliver_later(path_and_query, body);
        }
    }
    match answer {
        Ok((status, ct, bytes)) => {
            let mut response = (status, bytes).into_response();
            if let Some(ct) = ct {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Err(why) => {
            balancer.answered_502.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_GATEWAY, format!("replica {backend}: {why}")).into_response()
        }
    }
}
