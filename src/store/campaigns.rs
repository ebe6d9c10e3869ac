//! Campaigns: what the operator asked for, each run (one due time), each WeCom task of a run and
//! whom it was for; the audience query.

use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

use super::{Result, Store, Tx, stored, with_pool, with_tx};
use crate::ids::{ExternalUserId, UserId};

string_enum! {
    /// Where a campaign stands; `campaigns.status`.
    CampaignStatus {
        /// Its first run is still to come.
        Scheduled => "scheduled",
        /// A run has started, or more are to come (a recurring campaign).
        Running => "running",
        /// No run is to come.
        Done => "done",
        Cancelled => "cancelled",
    }
}

string_enum! {
    /// Where a run stands; `campaign_runs.status`.
    RunStatus {
        Pending => "pending",
        /// Its WeCom tasks are being created and followed.
        Sending => "sending",
        /// Every task was created (their results are followed on the sends).
        Sent => "sent",
        Cancelled => "cancelled",
        Failed => "failed",
    }
}

string_enum! {
    /// What one WeCom task of a run is; `campaign_sends.kind`.
    CampaignSendKind {
        /// add_msg_template to customers, from one member.
        Template => "template",
        /// add_msg_template to customer groups, from their owner.
        GroupTemplate => "group_template",
        /// add_moment_task.
        Moment => "moment",
    }
}

string_enum! {
    /// Where a send stands; `campaign_sends.status`.
    CampaignSendStatus {
        Pending => "pending",
        /// The task exists; members must confirm or publish it.
        Tasked => "tasked",
        /// Every member it was for sent (or published) it, or its results are final.
        Sent => "sent",
        /// Followed for the configured days; some never sent it.
        Unsent => "unsent",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignRow {
    pub id: i64,
    pub kind: String,
    pub name: String,
    pub audience: String,
    pub content: String,
    pub schedule: String,
    pub timezone: String,
    pub status: CampaignStatus,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub campaign_id: i64,
    pub due_at: i64,
    pub status: RunStatus,
    pub audience: i64,
    pub excluded_cap: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CampaignSend {
    pub id: i64,
    pub run_id: i64,
    pub kind: CampaignSendKind,
    /// The member who sends ('' for a moment).
    #[schema(value_type = String)]
    pub sender: UserId,
    pub chunk: i64,
    pub status: CampaignSendStatus,
    pub msgid: Option<String>,
    pub jobid: Option<String>,
    pub moment_id: Option<String>,
    pub recipients: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub tasked_at: Option<i64>,
    pub reminded_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One recipient of a send and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recipient {
    pub target: String,
    pub status: String,
    pub at: Option<i64>,
}

const CAMPAIGN_COLUMNS: &str = "id, kind, name, audience, content, schedule, timezone, status, \
     created_by, created_at, updated_at";
type CampaignTuple = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
);

fn campaign(r: CampaignTuple) -> Result<CampaignRow> {
    Ok(CampaignRow {
        id: r.0,
        kind: r.1,
        name: r.2,
        audience: r.3,
        content: r.4,
        schedule: r.5,
        timezone: r.6,
        status: stored("campaigns.status", &r.7, CampaignStatus::parse)?,
        created_by: r.8,
        created_at: r.9,
        updated_at: r.10,
    })
}

const RUN_COLUMNS: &str =
    "id, campaign_id, due_at, status, audience, excluded_cap, started_at, finished_at, error";
type RunTuple = (
    i64,
    i64,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn run(r: RunTuple) -> Result<Run> {
    Ok(Run {
        id: r.0,
        campaign_id: r.1,
        due_at: r.2,
        status: stored("campaign_runs.status", &r.3, RunStatus::parse)?,
        audience: r.4,
        excluded_cap: r.5,
        started_at: r.6,
        finished_at: r.7,
        error: r.8,
    })
}

const SEND_COLUMNS: &str = "id, run_id, kind, sender, chunk, status, msgid, jobid, moment_id, \
     recipients, error, created_at, tasked_at, reminded_at, finished_at";
type SendTuple = (
    i64,
    i64,
    String,
    UserId,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn send(r: SendTuple) -> Result<CampaignSend> {
    Ok(CampaignSend {
        id: r.0,
        run_id: r.1,
        kind: stored("campaign_sends.kind", &r.2, CampaignSendKind::parse)?,
        sender: r.3,
        chunk: r.4,
        status: stored("campaign_sends.status", &r.5, CampaignSendStatus::parse)?,
        msgid: r.6,
        jobid: r.7,
        moment_id: r.8,
        recipients: r.9,
        error: r.10,
        created_at: r.11,
        tasked_at: r.12,
        reminded_at: r.13,
        finished_at: r.14,
    })
}

pub struct NewCampaign<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub audience: &'a str,
    pub content: &'a str,
    pub schedule: &'a str,
    pub timezone: &'a str,
    pub created_by: &'a str,
    pub at: i64,
}

pub async fn insert_campaign(tx: &mut Tx, c: &NewCampaign<'_>) -> Result<i64> {
    let id = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "INSERT INTO campaigns (kind, name, audience, content, schedule, timezone, status, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $8, $8) RETURNING id",
        )
        .bind(c.kind)
        .bind(c.name)
        .bind(c.audience)
        .bind(c.content)
        .bind(c.schedule)
        .bind(c.timezone)
        .bind(c.created_by)
        .bind(c.at)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(id)
}

pub async fn set_campaign_status(
    tx: &mut Tx,
    id: i64,
    status: CampaignStatus,
    at: i64,
) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query("UPDATE campaigns SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(at)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

pub async fn campaign_in(tx: &mut Tx, id: i64) -> Result<Option<CampaignRow>> {
    let row: Option<CampaignTuple> = with_tx!(tx, |conn| {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    });
    row.map(campaign).transpose()
}

/// The run of a campaign at `due_at`, made if it is not there yet: (the run, made now).
pub async fn run_for(tx: &mut Tx, campaign_id: i64, due_at: i64) -> Result<(Run, bool)> {
    let made = with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO campaign_runs (campaign_id, due_at, status, audience, excluded_cap)
             VALUES ($1, $2, 'pending', 0, 0) ON CONFLICT (campaign_id, due_at) DO NOTHING",
        )
        .bind(campaign_id)
        .bind(due_at)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    let row: RunTuple = with_tx!(tx, |conn| {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM campaign_runs WHERE campaign_id = $1 AND due_at = $2"
        )))
        .bind(campaign_id)
        .bind(due_at)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok((run(row)?, made > 0))
}

pub async fn save_run(tx: &mut Tx, r: &Run) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE campaign_runs SET status = $1, audience = $2, excluded_cap = $3, started_at = $4,
               finished_at = $5, error = $6 WHERE id = $7",
        )
        .bind(r.status.as_str())
        .bind(r.audience)
        .bind(r.excluded_cap)
        .bind(r.started_at)
        .bind(r.finished_at)
        .bind(&r.error)
        .bind(r.id)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Adds one send of a run with its recipients; answers its id (None when it was made before).
pub async fn insert_send(
    tx: &mut Tx,
    run_id: i64,
    kind: CampaignSendKind,
    sender: &str,
    chunk: i64,
    recipients: &[String],
    at: i64,
) -> Result<Option<i64>> {
    let id: Option<i64> = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "INSERT INTO campaign_sends (run_id, kind, sender, chunk, status, recipients, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6)
             ON CONFLICT (run_id, kind, sender, chunk) DO NOTHING RETURNING id",
        )
        .bind(run_id)
        .bind(kind.as_str())
        .bind(sender)
        .bind(chunk)
        .bind(recipients.len() as i64)
        .bind(at)
        .fetch_optional(&mut *conn)
        .await?
    });
    let Some(id) = id else {
        return Ok(None);
    };
    for part in recipients.chunks(500) {
        with_tx!(tx, |conn| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO campaign_recipients (send_id, target, status) ",
            );
            q.push_values(part, |mut row, target| {
                row.push_bind(id).push_bind(target).push_bind("pending");
            });
            q.build().execute(&mut *conn).await?;
        });
    }
    Ok(Some(id))
}

pub async fn save_send(tx: &mut Tx, s: &CampaignSend) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE campaign_sends SET status = $1, msgid = $2, jobid = $3, moment_id = $4, error = $5,
               tasked_at = $6, reminded_at = $7, finished_at = $8 WHERE id = $9",
        )
        .bind(s.status.as_str())
        .bind(&s.msgid)
        .bind(&s.jobid)
        .bind(&s.moment_id)
        .bind(&s.error)
        .bind(s.tasked_at)
        .bind(s.reminded_at)
        .bind(s.finished_at)
        .bind(s.id)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Sets what came of recipients of a send (`(target, status)`), whatever they were before.
pub async fn set_recipients(
    tx: &mut Tx,
    send_id: i64,
    results: &[(String, &str)],
    at: i64,
) -> Result<()> {
    for (target, status) in results {
        with_tx!(tx, |conn| {
            sqlx::query(
                "UPDATE campaign_recipients SET status = $1, at = $2 WHERE send_id = $3 AND target = $4",
            )
            .bind(*status)
            .bind(at)
            .bind(send_id)
            .bind(target)
            .execute(&mut *conn)
            .await?;
        });
    }
    Ok(())
}

/// Every pending recipient of a send becomes `status`.
pub async fn settle_pending_recipients(
    tx: &mut Tx,
    send_id: i64,
    status: &str,
    at: i64,
) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE campaign_recipients SET status = $1, at = $2 WHERE send_id = $3 AND status = 'pending'",
        )
        .bind(status)
        .bind(at)
        .bind(send_id)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Takes one of WeCom's Moments-task slots of the minute for a send (`per_minute` per corp,
/// counted over every replica: the slot is its `tasked_at`, taken under a lock). False when the
/// minute's slots are taken; true too when the send holds one already.
pub async fn reserve_moment_slot(
    tx: &mut Tx,
    send_id: i64,
    now: i64,
    per_minute: i64,
) -> Result<bool> {
    let since = now - 60_000;
    // SQLite: the transaction holds the process's write turn, and one process writes. PostgreSQL:
    // replicas take turns on a transaction-scoped advisory lock.
    if let super::TxInner::Postgres(t) = &mut tx.inner {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('siyu.moment_slots'))")
            .execute(&mut **t)
            .await?;
    }
    with_tx!(tx, |conn| {
        let held: Option<i64> =
            sqlx::query_scalar("SELECT tasked_at FROM campaign_sends WHERE id = $1")
                .bind(send_id)
                .fetch_one(&mut *conn)
                .await?;
        if held.is_some_and(|t| t >= since) {
            return Ok(true);
        }
        let taken: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM campaign_sends WHERE kind = 'moment' AND tasked_at >= $1",
        )
        .bind(since)
        .fetch_one(&mut *conn)
        .await?;
        if taken >= per_minute {
            return Ok(false);
        }
        sqlx::query("UPDATE campaign_sends SET tasked_at = $1 WHERE id = $2")
            .bind(now)
            .bind(send_id)
            .execute(&mut *conn)
            .await?;
        Ok(true)
    })
}

impl Store {
    pub async fn campaign(&self, id: i64) -> Result<Option<CampaignRow>> {
        let row: Option<CampaignTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(campaign).transpose()
    }

    /// Campaigns, newest first, of one status (every status with None).
    pub async fn campaigns(&self, status: Option<CampaignStatus>) -> Result<Vec<CampaignRow>> {
        let status = status.map(CampaignStatus::as_str);
        let rows: Vec<CampaignTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE ($1 IS NULL OR status = $1) ORDER BY id DESC"
            )))
            .bind(status)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(campaign).collect()
    }

    pub async fn runs_of(&self, campaign_id: i64) -> Result<Vec<Run>> {
        let rows: Vec<RunTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM campaign_runs WHERE campaign_id = $1 ORDER BY due_at"
            )))
            .bind(campaign_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(run).collect()
    }

    pub async fn campaign_run(&self, id: i64) -> Result<Option<Run>> {
        let row: Option<RunTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM campaign_runs WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(run).transpose()
    }

    pub async fn sends_of_run(&self, run_id: i64) -> Result<Vec<CampaignSend>> {
        let rows: Vec<SendTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {SEND_COLUMNS} FROM campaign_sends WHERE run_id = $1 ORDER BY id"
            )))
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(send).collect()
    }

    pub async fn campaign_send(&self, id: i64) -> Result<Option<CampaignSend>> {
        let row: Option<SendTuple> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {SEND_COLUMNS} FROM campaign_sends WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(send).transpose()
    }

    pub async fn recipients_of(&self, send_id: i64) -> Result<Vec<Recipient>> {
        let rows: Vec<(String, String, Option<i64>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT target, status, at FROM campaign_recipients WHERE send_id = $1 ORDER BY target",
            )
            .bind(send_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(target, status, at)| Recipient { target, status, at })
            .collect())
    }

    /// Recipients of a run's sends by status.
    pub async fn run_totals(&self, run_id: i64) -> Result<Vec<(String, i64)>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT r.status, COUNT(*) FROM campaign_recipients r JOIN campaign_sends s ON s.id = r.send_id
                 WHERE s.run_id = $1 GROUP BY r.status ORDER BY r.status",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// The connected relations whose customer matches: `(member, customer, added_at)`, by
    /// customer then by when the member added them. An empty list does not filter.
    pub async fn audience(
        &self,
        tiers: &[String],
        segments: &[String],
        channels: &[String],
        members: &[UserId],
    ) -> Result<Vec<(UserId, ExternalUserId, i64)>> {
        let rows = with_pool!(self, |pool| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT f.userid, f.external_userid, f.added_at FROM follows f
                 JOIN customers c ON c.external_userid = f.external_userid
                 WHERE f.status = 'connected'",
            );
            let mut filter = |column: &str, values: &[String]| {
                if values.is_empty() {
                    return;
                }
                q.push(format!(" AND {column} IN ("));
                let mut sep = q.separated(", ");
                for v in values {
                    sep.push_bind(v.clone());
                }
                sep.push_unseparated(")");
            };
            filter("c.tier", tiers);
            filter("c.segment", segments);
            filter("f.channel", channels);
            let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
            filter("f.userid", &members);
            q.push(" ORDER BY f.external_userid, f.added_at, f.userid");
            q.build_query_as().fetch_all(pool).await?
        });
        Ok(rows)
    }
}
