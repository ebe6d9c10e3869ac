//! WeCom's side of a callback: seal an event as WeCom does and POST it, retrying like WeCom
//! (callback.md §4: 5 s to answer 200, three tries in all). The fake WeCom's driver, the tests and
//! the benchmark deliver events through this, so they exercise the real endpoint byte for byte.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::wecom::crypto::Crypto;

/// How WeCom waits for an answer before it gives up on a try.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries in all (the first and the retries).
pub const TRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("callback not accepted after {tries} tries; last answer: {last}")]
    NotAccepted { tries: u32, last: String },
}

/// A sealed callback, ready to POST.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// `msg_signature=..&timestamp=..&nonce=..`
    pub query: String,
    pub body: String,
}

#[derive(Clone)]
pub struct CallbackSender {
    client: reqwest::Client,
    url: String,
    crypto: Arc<Crypto>,
    agent_id: String,
}

impl CallbackSender {
    /// `url` is the full callback URL, e.g. `http://127.0.0.1:8080/wecom/callback`.
    pub fn new(url: impl Into<String>, crypto: Arc<Crypto>, agent_id: impl Into<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(ANSWER_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            client,
            url: url.into(),
            crypto,
            agent_id: agent_id.into(),
        }
    }

    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// Encrypts and signs `xml` with a fresh timestamp and nonce.
    pub fn seal(&self, xml: &str) -> Sealed {
        let timestamp = (crate::clock::system_now_ms() / 1000).to_string();
        let nonce = rand::thread_rng()
            .gen_range(100_000_000u64..10_000_000_000)
            .to_string();
        let (signature, body) = self
            .crypto
            .seal_callback(xml, &self.agent_id, &timestamp, &nonce);
        Sealed {
            query: format!("msg_signature={signature}&timestamp={timestamp}&nonce={nonce}"),
            body,
        }
    }

    /// One POST of a sealed callback; the HTTP status, or the transport error as text.
    pub async fn post(&self, sealed: &Sealed) -> Result<u16, String> {
        self.client
            .post(format!("{}?{}", self.url, sealed.query))
            .header("content-type", "text/xml")
            .body(sealed.body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    }

    /// Delivers like WeCom: up to three tries of the same sealed message, each given 5 s, until
    /// one is answered 200. Returns the number of tries it took.
    pub async fn deliver(&self, xml: &str) -> Result<u32, SendError> {
        let sealed = self.seal(xml);
        let mut last = String::new();
        for attempt in 1..=TRIES {
            match self.post(&sealed).await {
                Ok(200) => return Ok(attempt),
                Ok(status) => last = format!("HTTP {status}"),
                Err(e) => last = e,
            }
        }
        Err(SendError::NotAccepted { tries: TRIES, last })
    }
}
