//! Look before you retry: the one mechanism every send job uses (a welcome, a member notice, a
//! mass message, a Moments post).
//!
//! A send whose outcome is unknown (the request left, no answer came back) must not simply be
//! sent again: that is how customers get a message twice. So a send job keeps a ledger in its row
//! (`jobs.ledger`): the exact body, written durably *before* the call, and what became of it.
//! A later attempt of the same job then
//! - skips the send when the ledger says it went out (the job failed after it, say on the
//!   database), and does only the rest;
//! - after an unknown outcome, *looks* first (a list endpoint such as `get_groupmsg_list_v2`), or,
//!   where WeCom itself makes a repeat harmless (a welcome's single-use code, `message/send`'s
//!   duplicate check on an identical body), sends again — byte for byte the body of the first try,
//!   never a re-rendered one;
//! - after a definite refusal, sends the same body again (it never left).

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{JobContext, JobError};

/// An error of a send call that may tell "it may have happened" apart from "it did not".
pub trait SendError: std::fmt::Display {
    /// The request may have reached WeCom and been acted on.
    fn outcome_unknown(&self) -> bool;
}

/// What the ledger knows of the send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendState {
    /// Recorded before the call; still so after it only when the outcome is unknown (or the
    /// process died during the call, or WeCom refused a repeat of a send whose outcome was
    /// unknown: the first may still have gone out).
    Sending,
    Sent,
    /// Repeated after an unknown outcome, WeCom answered that it had been done (a welcome's code
    /// already used): it went out, as far as anyone can tell.
    ProbablySent,
    /// WeCom refused it: it never went out.
    Refused,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ledger<B> {
    body: B,
    state: SendState,
}

/// What a look at WeCom found out about an earlier attempt whose outcome is unknown.
#[derive(Debug)]
pub enum Look {
    /// It went out: don't send again.
    Sent,
    /// It did not, or sending the identical body again is harmless: send.
    SendAgain,
    /// Can't tell yet (WeCom still dispatching, the list unreachable): try again later.
    Unknown(String),
}

/// How [`JobContext::send_once`] ended.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// Sent by this attempt.
    Sent(T),
    /// An earlier attempt sent it (its ledger says so, or the look found it).
    SentBefore,
    /// WeCom refused the call. `after_unknown`: this attempt repeated one whose outcome was
    /// unknown, so a "done already" refusal means the first went out.
    Refused { error: E, after_unknown: bool },
}

impl JobContext {
    /// The ledger of an earlier attempt, if any recorded one. One that does not parse fails the
    /// job: an earlier attempt may have sent, and with no body to compare a fresh send could be
    /// a second one.
    fn ledger<B: DeserializeOwned>(&self) -> Result<Option<Ledger<B>>, JobError> {
        let Some(text) = self.job.ledger.as_deref() else {
            return Ok(None);
        };
        serde_json::from_str(text).map(Some).map_err(|e| {
            JobError::Permanent(format!(
                "the job's send ledger does not parse ({e}); not sending again blindly"
            ))
        })
    }

    async fn record<B: Serialize>(&self, body: &B, state: SendState) -> Result<(), JobError> {
        let text = serde_json::to_string(&Ledger { body, state })
            .map_err(|e| JobError::Permanent(format!("send body does not serialize: {e}")))?;
        if self
            .store
            .record_job_ledger(self.job.id, &self.worker, &text)
            .await?
        {
            Ok(())
        } else {
            Err(JobError::Retry(
                "lost the job's lease before sending".into(),
            ))
        }
    }

    /// Sends at most once, as far as WeCom lets anyone tell: `render` builds the body on the first
    /// attempt only; later attempts reuse the recorded one. `look` is asked only after an unknown
    /// outcome. An unknown outcome of this attempt is a retry (the next attempt looks first).
    pub async fn send_once<B, T, E, R, RF, L, LF, S, SF>(
        &self,
        render: R,
        look: L,
        send: S,
    ) -> Result<(B, Outcome<T, E>), JobError>
    where
        B: Serialize + DeserializeOwned,
        E: SendError,
        R: FnOnce() -> RF,
        RF: Future<Output = Result<B, JobError>>,
        L: FnOnce(&B) -> LF,
        LF: Future<Output = Result<Look, JobError>>,
        S: FnOnce(&B) -> SF,
        SF: Future<Output = Result<T, E>>,
    {
        let (body, after_unknown) = match self.ledger::<B>()? {
            Some(Ledger {
                body,
                state: SendState::Sent | SendState::ProbablySent,
            }) => return Ok((body, Outcome::SentBefore)),
            Some(Ledger {
                body,
                state: SendState::Sending,
            }) => match look(&body).await? {
                Look::Sent => {
                    self.record(&body, SendState::Sent).await?;
                    return Ok((body, Outcome::SentBefore));
                }
                Look::SendAgain => (body, true),
                Look::Unknown(why) => {
                    return Err(JobError::Retry(format!(
                        "an earlier attempt's outcome is still unknown: {why}"
                    )));
                }
            },
            Some(Ledger {
                body,
                state: SendState::Refused,
            }) => (body, false),
            None => (render().await?, false),
        };
        self.record(&body, SendState::Sending).await?;
        match send(&body).await {
            Ok(t) => {
                self.record(&body, SendState::Sent).await?;
                Ok((body, Outcome::Sent(t)))
            }
            Err(e) if e.outcome_unknown() => Err(JobError::Retry(format!(
                "outcome unknown; the next attempt looks before it sends again: {e}"
            ))),
            Err(error) => {
                // A refused repeat says nothing of the first try, whose outcome is still
                // unknown: the next attempt must treat its send as one after an unknown outcome
                // too (look, and take "done already" for sent), so the ledger stays `Sending`.
                let state = if after_unknown {
                    SendState::Sending
                } else {
                    SendState::Refused
                };
                self.record(&body, state).await?;
                Ok((
                    body,
                    Outcome::Refused {
                        error,
                        after_unknown,
                    },
                ))
            }
        }
    }

    /// Records that a send went out as far as anyone can tell (see [`SendState::ProbablySent`]).
    pub async fn record_probably_sent<B: Serialize>(&self, body: &B) -> Result<(), JobError> {
        self.record(body, SendState::ProbablySent).await
    }
}
