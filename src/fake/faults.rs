//! Fault injection and the call log.
//!
//! Faults apply before normal handling, per API path, so a test can make exactly the call it cares
//! about misbehave: the next N calls, a random share of calls, or every call slowly. The call log
//! records every API call in arrival order with the access token redacted, so tests can assert on
//! what siyu actually sent (and that it never leaks a token into a log of its own).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::Serialize;

/// How an injected fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// `{"errcode":c,"errmsg":"..."}` with HTTP 200, as WeCom answers every API error.
    Errcode(i64),
    /// That HTTP status with a non-JSON body, as a broken gateway would.
    Http(u16),
    /// Handles the call (its effect happens), then holds the answer longer than any client
    /// timeout: the caller sees "outcome unknown" although the change was made.
    Timeout,
    /// Handles the call (its effect happens), then answers HTTP 200 whose body breaks off: the
    /// headers promise more bytes than arrive before the connection is cut, so the caller
    /// cannot read the answer although the change was made.
    BrokenBody,
}

/// One API call as the fake received it.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub method: String,
    /// The full path, e.g. `/cgi-bin/externalcontact/mark_tag`.
    pub path: String,
    /// The raw query with the `access_token` (and `corpsecret`) value replaced by `REDACTED`.
    pub query: String,
    /// The body as text (lossy for binary multipart uploads, cut at 64 KiB).
    pub body: String,
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
    /// The errcode of the JSON answer; `None` for a non-JSON answer or one still pending.
    pub errcode: Option<i64>,
    /// 0 while the call is still being answered.
    pub http_status: u16,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    s.serialize_u64(ms)
}

/// Longest body kept in the call log; uploads can be megabytes.
const MAX_LOGGED_BODY: usize = 64 * 1024;

/// Every path's injected faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    by_path: HashMap<String, PathFaults>,
}

#[derive(Debug, Default)]
struct PathFaults {
    /// `fail_next`: consumed front to back, one call per unit of count.
    next: VecDeque<(u32, Failure)>,
    rate: Option<(f64, Failure)>,
    latency: Option<Duration>,
}

/// What to do to one call.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Decision {
    pub latency: Option<Duration>,
    pub failure: Option<Failure>,
}

/// `"/cgi-bin/x"`, `"cgi-bin/x"` and `"x"` all name the same API; `"*"` names every API.
pub(crate) fn normalize_path(path: &str) -> String {
    if path == "*" {
        return path.to_owned();
    }
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed.strip_prefix("cgi-bin/").unwrap_or(trimmed);
    format!("/cgi-bin/{trimmed}")
}

impl Faults {
    pub fn fail_next(&mut self, path: &str, times: u32, failure: Failure) {
        if times > 0 {
            self.entry(path).next.push_back((times, failure));
        }
    }

    pub fn set_error_rate(&mut self, path: &str, rate: f64, failure: Failure) {
        let rate = if rate.is_finite() {
            rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.entry(path).rate = Some((rate, failure));
    }

    pub fn set_latency(&mut self, path: &str, latency: Duration) {
        self.entry(path).latency = Some(latency);
    }

    pub fn clear(&mut self) {
        self.by_path.clear();
    }

    fn entry(&mut self, path: &str) -> &mut PathFaults {
        self.by_path.entry(normalize_path(path)).or_default()
    }

    /// Decides the fate of one call to `path`; the exact path wins over `"*"`.
    pub fn decide(&mut self, path: &str) -> Decision {
        let mut decision = Decision::default();
        for key in [path, "*"] {
            let Some(rules) = self.by_path.get_mut(key) else {
                continue;
            };
            if decision.latency.is_none() {
                decision.latency = rules.latency;
            }
            if decision.failure.is_some() {
                continue;
            }
            if let Some((left, failure)) = rules.next.front_mut() {
                decision.failure = Some(*failure);
                *left -= 1;
                if *left == 0 {
                    rules.next.pop_front();
                }
            } else if let Some((rate, failure)) = rules.rate
                && rate > 0.0
                && rand::thread_rng().gen_bool(rate)
            {
                decision.failure = Some(failure);
            }
        }
        decision
    }
}

/// The query with the token's (and gettoken's secret's) value replaced, so the log can be
/// printed and compared safely.
pub(crate) fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key @ ("access_token" | "corpsecret"), _)) => format!("{key}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn loggable_body(body: &[u8]) -> String {
    let cut = &body[..body.len().min(MAX_LOGGED_BODY)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_is_consumed_in_order_then_calls_pass() {
        let mut faults = Faults::default();
        faults.fail_next("externalcontact/mark_tag", 2, Failure::Errcode(-1));
        faults.fail_next("/cgi-bin/externalcontact/mark_tag", 1, Failure::Http(502));
        let path = "/cgi-bin/externalcontact/mark_tag";
        assert_eq!(faults.decide(path).failure, Some(Failure::Errcode(-1)));
        assert_eq!(faults.decide(path).failure, Some(Failure::Errcode(-1)));
        assert_eq!(faults.decide(path).failure, Some(Failure::Http(502)));
        assert_eq!(faults.decide(path).failure, None);
        assert_eq!(faults.decide("/cgi-bin/gettoken").failure, None);
    }

    #[test]
    fn star_applies_to_every_path() {
        let mut faults = Faults::default();
        faults.set_latency("*", Duration::from_millis(5));
        faults.set_error_rate("*", 1.0, Failure::Errcode(45033));
        let d = faults.decide("/cgi-bin/gettoken");
        assert_eq!(d.latency, Some(Duration::from_millis(5)));
        assert_eq!(d.failure, Some(Failure::Errcode(45033)));
    }

    #[test]
    fn the_token_is_redacted() {
        assert_eq!(
            redact_query("access_token=abc&userid=zhangsan"),
            "access_token=REDACTED&userid=zhangsan"
        );
        assert_eq!(
            redact_query("corpid=ww1&corpsecret=s3cret"),
            "corpid=ww1&corpsecret=REDACTED"
        );
    }
}
