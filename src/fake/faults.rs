//! Fault injection and the call log.
//!
//! Faults apply before normal handling, per API path, so a test can make exactly the call it cares
//! about misbehave: the next N calls, a random share of calls, or every call slowly; or, for the
//! soak, a random share of calls each given one fault drawn from a weighted mix. The call log
//! records every API call in arrival order with the access token redacted, so tests can assert on
//! what siyu actually sent (and that it never leaks a token into a log of its own).

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    /// The fault injected into this call, if any: with `Timeout` or `BrokenBody` the logged
    /// errcode is what the fake did, while the caller never read it.
    pub fault: Option<Failure>,
}

const GETTOKEN: &str = "/cgi-bin/gettoken";
const TOKEN_EXPIRED: i64 = 42001;
const TOKEN_INVALID: i64 = 40014;

/// One fault of a [`FaultMix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MixedFault {
    Fail(Failure),
    /// The call is handled normally, this much later.
    Latency(Duration),
}

impl MixedFault {
    /// A short name for counting faults by kind: `errcode_45009`, `http_503`, `timeout`,
    /// `broken_body`, `latency`.
    pub fn label(&self) -> String {
        match self {
            MixedFault::Fail(Failure::Errcode(c)) => format!("errcode_{c}"),
            MixedFault::Fail(Failure::Http(s)) => format!("http_{s}"),
            MixedFault::Fail(Failure::Timeout) => "timeout".into(),
            MixedFault::Fail(Failure::BrokenBody) => "broken_body".into(),
            MixedFault::Latency(_) => "latency".into(),
        }
    }
}

/// A random share of calls each get one fault, drawn by weight from `faults`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultMix {
    pub rate: f64,
    pub faults: Vec<(u32, MixedFault)>,
}

impl FaultMix {
    /// What WeCom does wrong, in the proportions the soak uses: busy (-1), over the frequency
    /// limit (45009), a token that expired early (42001) or is unknown (40014), a gateway's 5xx,
    /// an answer that never comes although the change was made, and a slow answer.
    pub fn wecom_like(rate: f64, latency: Duration) -> FaultMix {
        FaultMix {
            rate,
            faults: vec![
                (3, MixedFault::Fail(Failure::Errcode(-1))),
                (2, MixedFault::Fail(Failure::Errcode(45009))),
                (1, MixedFault::Fail(Failure::Errcode(TOKEN_EXPIRED))),
                (1, MixedFault::Fail(Failure::Errcode(TOKEN_INVALID))),
                (2, MixedFault::Fail(Failure::Http(503))),
                (2, MixedFault::Fail(Failure::Timeout)),
                (3, MixedFault::Latency(latency)),
            ],
        }
    }

    /// A fault for one call to `path`, or none. A token error answers only a call that
    /// carries a token: gettoken is spared them.
    fn draw(&self, path: &str) -> Option<MixedFault> {
        let mut rng = rand::thread_rng();
        let total: u32 = self.faults.iter().map(|(w, _)| *w).sum();
        if total == 0 || self.rate <= 0.0 || !rng.gen_bool(self.rate.clamp(0.0, 1.0)) {
            return None;
        }
        let mut pick = rng.gen_range(0..total);
        let fault = self.faults.iter().find_map(|(weight, fault)| {
            if pick < *weight {
                return Some(*fault);
            }
            pick -= weight;
            None
        })?;
        let token_error = matches!(
            fault,
            MixedFault::Fail(Failure::Errcode(TOKEN_EXPIRED | TOKEN_INVALID))
        );
        (!(token_error && path == GETTOKEN)).then_some(fault)
    }
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
    /// Every fault injected since the fake started, by [`MixedFault::label`] (`clear` keeps it).
    injected: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct PathFaults {
    /// `fail_next`: consumed front to back, one call per unit of count.
    next: VecDeque<(u32, Failure)>,
    rate: Option<(f64, Failure)>,
    latency: Option<Duration>,
    mix: Option<FaultMix>,
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

    pub fn set_mix(&mut self, path: &str, mix: FaultMix) {
        self.entry(path).mix = Some(mix);
    }

    pub fn clear(&mut self) {
        self.by_path.clear();
    }

    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.injected.clone()
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
            } else if let Some(fault) = rules.mix.as_ref().and_then(|m| m.draw(path)) {
                match fault {
                    MixedFault::Fail(failure) => decision.failure = Some(failure),
                    MixedFault::Latency(latency) => {
                        decision.latency = Some(decision.latency.unwrap_or_default() + latency);
                    }
                }
                *self.injected.entry(fault.label()).or_default() += 1;
                continue;
            }
            if let Some(failure) = decision.failure {
                *self
                    .injected
                    .entry(MixedFault::Fail(failure).label())
                    .or_default() += 1;
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
    fn a_mix_injects_each_of_its_faults_at_about_its_rate() {
        let mut faults = Faults::default();
        let mix = FaultMix::wecom_like(0.2, Duration::from_millis(5));
        faults.set_mix("*", mix.clone());
        let calls = 20_000;
        let mut failed = 0;
        let mut slowed = 0;
        for _ in 0..calls {
            let d = faults.decide("/cgi-bin/externalcontact/mark_tag");
            failed += usize::from(d.failure.is_some());
            slowed += usize::from(d.latency.is_some());
        }
        let injected = faults.injected();
        let total: u64 = injected.values().sum();
        assert_eq!(total as usize, failed + slowed, "{injected:?}");
        let share = total as f64 / calls as f64;
        assert!((0.17..0.23).contains(&share), "{share} of calls faulted");
        for (_, fault) in &mix.faults {
            assert!(
                injected.get(&fault.label()).copied().unwrap_or(0) > 0,
                "{} never injected: {injected:?}",
                fault.label()
            );
        }
        for _ in 0..2_000 {
            let d = faults.decide(GETTOKEN);
            assert!(
                !matches!(
                    d.failure,
                    Some(Failure::Errcode(TOKEN_EXPIRED | TOKEN_INVALID))
                ),
                "gettoken carries no token to be wrong"
            );
        }
        let injected = faults.injected();
        faults.clear();
        assert_eq!(faults.decide(GETTOKEN).failure, None);
        assert_eq!(faults.injected(), injected, "clear keeps the count");
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
