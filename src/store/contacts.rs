//! Channels, customers, follow relations, siyu's own corp tags and relation events.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::json_rows::{self, Field};
use super::{Result, Store, StoreError, Tx, stored, with_pool, with_tx};
use crate::ids::{ExternalUserId, TagId, UserId};

string_enum! {
    /// Where a follow relation (a member and a customer) stands; `follows.status`.
    FollowStatus {
        /// The customer and the member are contacts.
        Connected => "connected",
        /// The customer deleted the member (churn).
        Lost => "lost",
        /// The member deleted the customer.
        Deleted => "deleted",
        /// The customer was handed over to another member.
        Transferred => "transferred",
    }
}

string_enum! {
    /// What a contact event records; `contact_events.kind`.
    ContactEventKind {
        /// The customer deleted the member.
        Churn => "churn",
        /// The customer's tier changed (the detail says from and to).
        Tier => "tier",
        /// The member deleted the customer.
        Deleted => "deleted",
        /// The customer was handed over to another member.
        Handover => "handover",
        /// WeCom failed to hand the customer over (the detail is its reason).
        TransferFail => "transfer_fail",
        /// A member took one of siyu's tags off by hand (the detail lists the tag ids).
        TagRemoved => "tag_removed",
        /// The member was given a task inviting the customer into their tier's group (the
        /// detail is the tier).
        GroupInvited => "group_invited",
        /// A group owner was asked to remove the customer (the detail is the group's name).
        GroupRemoval => "group_removal",
    }
}

string_enum! {
    /// Which of siyu's tags a corp tag is; `siyu_tags.kind`.
    TagKind {
        /// A channel's own tag (one per channel, and the unattributed one).
        Channel => "channel",
        /// One of a channel's extra tags.
        Extra => "extra",
        /// A tier's tag.
        Tier => "tier",
        /// A value segment's tag.
        Segment => "segment",
    }
}

/// A channel's welcome message: a template text and attachments. The attachments are kept as the
/// JSON WeCom takes (`{"msgtype": "link", "link": {...}}`); the channels feature checks their
/// shape before it stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Welcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Channel {
    pub code: String,
    pub name: String,
    /// The members a customer adds through the channel.
    pub staff: Vec<UserId>,
    pub tags: Vec<String>,
    pub welcome: Option<Welcome>,
    pub config_id: Option<String>,
    pub qr_code: Option<String>,
    #[schema(example = "api")]
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelStats {
    /// Relations ever made through the channel.
    pub added: i64,
    /// Of those, still connected.
    pub connected: i64,
    /// Of those, ended by the customer (churn).
    pub lost: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Customer {
    pub external_userid: ExternalUserId,
    pub name: String,
    pub kind: i64,
    pub corp_name: String,
    pub tier: String,
    pub channel: String,
    pub first_added_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Follow {
    pub userid: UserId,
    pub external_userid: ExternalUserId,
    pub channel: String,
    pub state: Option<String>,
    pub add_way: i64,
    pub added_at: i64,
    pub remark: String,
    pub description: String,
    pub tag_ids: Vec<TagId>,
    pub status: FollowStatus,
    pub ended_at: Option<i64>,
    pub siyu_remark: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiyuTag {
    pub kind: TagKind,
    pub code: String,
    pub name: String,
    pub group_name: String,
    pub tag_id: Option<TagId>,
    pub group_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ContactEvent {
    pub external_userid: ExternalUserId,
    pub userid: UserId,
    pub kind: ContactEventKind,
    pub detail: Option<String>,
    pub at: i64,
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(column: &str, text: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(format!("{column}: {e}").into()))
}

macro_rules! channel_from_row {
    ($r:expr) => {{
        let r = $r;
        let welcome: Option<String> = r.try_get("welcome")?;
        Ok::<Channel, sqlx::Error>(Channel {
            code: r.try_get("code")?,
            name: r.try_get("name")?,
            staff: from_json("staff", &r.try_get::<String, _>("staff")?)?,
            tags: from_json("tags", &r.try_get::<String, _>("tags")?)?,
            welcome: welcome.map(|w| from_json("welcome", &w)).transpose()?,
            config_id: r.try_get("config_id")?,
            qr_code: r.try_get("qr_code")?,
            source: r.try_get("source")?,
        })
    }};
}

macro_rules! follow_from_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<Follow, StoreError>(Follow {
            userid: r.try_get("userid")?,
            external_userid: r.try_get("external_userid")?,
            channel: r.try_get("channel")?,
            state: r.try_get("state")?,
            add_way: r.try_get("add_way")?,
            added_at: r.try_get("added_at")?,
            remark: r.try_get("remark")?,
            description: r.try_get("description")?,
            tag_ids: from_json("tag_ids", &r.try_get::<String, _>("tag_ids")?)?,
            status: stored(
                "follows.status",
                &r.try_get::<String, _>("status")?,
                FollowStatus::parse,
            )?,
            ended_at: r.try_get("ended_at")?,
            siyu_remark: r.try_get("siyu_remark")?,
        })
    }};
}

macro_rules! customer_from_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<Customer, sqlx::Error>(Customer {
            external_userid: r.try_get("external_userid")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            corp_name: r.try_get("corp_name")?,
            tier: r.try_get("tier")?,
            channel: r.try_get("channel")?,
            first_added_at: r.try_get("first_added_at")?,
        })
    }};
}

macro_rules! contact_event_from_row {
    ($r:expr) => {{
        let r = $r;
        Ok::<ContactEvent, StoreError>(ContactEvent {
            external_userid: r.try_get("external_userid")?,
            userid: r.try_get("userid")?,
            kind: stored(
                "contact_events.kind",
                &r.try_get::<String, _>("kind")?,
                ContactEventKind::parse,
            )?,
            detail: r.try_get("detail")?,
            at: r.try_get("at")?,
        })
    }};
}

const CHANNEL_COLUMNS: &str = "code, name, staff, tags, welcome, config_id, qr_code, source";
const FOLLOW_COLUMNS: &str = "userid, external_userid, channel, state, add_way, added_at, remark, description, tag_ids, status, ended_at, siyu_remark";

/// `text` for a `LIKE ... ESCAPE '\'` pattern that matches it literally (`%` and `_` in it are
/// not wildcards).
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Which customers `GET /api/v1/customers` finds; every part given must hold.
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// A substring of the name or of a member's remark, in any case.
    pub q: Option<String>,
    pub tier: Option<String>,
    pub segment: Option<String>,
    /// The channel of the first add or of any relation.
    pub channel: Option<String>,
    /// A connected relation carries one of these tags.
    pub tag_ids: Option<Vec<TagId>>,
    /// This member follows the customer (a connected relation).
    pub member: Option<UserId>,
}

impl CustomerFilter {
    /// The condition over `customers c`, with its values to bind as `$1`, `$2`, ... in order.
    /// The SQL is the same on both backends: `LOWER(..) LIKE LOWER(..)` is case-insensitive on
    /// each (PostgreSQL's `LIKE` alone is not).
    fn to_sql(&self) -> Result<(String, Vec<String>)> {
        let mut sql = String::from("1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let mut bind = |value: String| {
            binds.push(value);
            format!("${}", binds.len())
        };
        let of_relation = "SELECT 1 FROM follows f WHERE f.external_userid = c.external_userid";
        if let Some(q) = &self.q {
            let p = bind(format!("%{}%", like_escaped(q)));
            sql.push_str(&format!(
                " AND (LOWER(c.name) LIKE LOWER({p}) ESCAPE '\\'
                   OR EXISTS ({of_relation} AND LOWER(f.remark) LIKE LOWER({p}) ESCAPE '\\'))"
            ));
        }
        if let Some(tier) = &self.tier {
            sql.push_str(&format!(" AND c.tier = {}", bind(tier.clone())));
        }
        if let Some(segment) = &self.segment {
            sql.push_str(&format!(" AND c.segment = {}", bind(segment.clone())));
        }
        if let Some(channel) = &self.channel {
            let p = bind(channel.clone());
            sql.push_str(&format!(
                " AND (c.channel = {p} OR EXISTS ({of_relation} AND f.channel = {p}))"
            ));
        }
        if let Some(ids) = &self.tag_ids {
            // `tag_ids` is a JSON array of strings: an id matches as its quoted JSON form.
            let mut any = Vec::with_capacity(ids.len());
            for id in ids {
                let p = bind(format!("%{}%", like_escaped(&to_json(id)?)));
                any.push(format!("f.tag_ids LIKE {p} ESCAPE '\\'"));
            }
            let any = if any.is_empty() {
                "1 = 0".to_string()
            } else {
                any.join(" OR ")
            };
            sql.push_str(&format!(
                " AND EXISTS ({of_relation} AND f.status = 'connected' AND ({any}))"
            ));
        }
        if let Some(member) = &self.member {
            let p = bind(member.to_string());
            sql.push_str(&format!(
                " AND EXISTS ({of_relation} AND f.status = 'connected' AND f.userid = {p})"
            ));
        }
        Ok((sql, binds))
    }
}

/// A customer as a search lists them.
#[derive(Debug, Clone)]
pub struct CustomerRow {
    pub external_userid: ExternalUserId,
    pub name: String,
    pub tier: String,
    pub segment: Option<String>,
    /// The channel of the first add.
    pub channel: String,
    pub first_added_at: i64,
}

// ---- channels ----

/// Inserts a channel; false when the code exists.
pub async fn insert_channel(tx: &mut Tx, c: &Channel, now: i64) -> Result<bool> {
    let welcome = c.welcome.as_ref().map(to_json).transpose()?;
    let (staff, tags) = (to_json(&c.staff)?, to_json(&c.tags)?);
    let n = with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO channels (code, name, staff, tags, welcome, config_id, qr_code, source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (code) DO NOTHING",
        )
        .bind(&c.code)
        .bind(&c.name)
        .bind(&staff)
        .bind(&tags)
        .bind(&welcome)
        .bind(&c.config_id)
        .bind(&c.qr_code)
        .bind(&c.source)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

fn channel_by_code_sql() -> String {
    format!("SELECT {CHANNEL_COLUMNS} FROM channels WHERE code = $1")
}

/// [`Store::channel`] in `tx`: on its connection, for a caller that holds a transaction (and on
/// SQLite the write turn) already.
pub async fn channel_in(tx: &mut Tx, code: &str) -> Result<Option<Channel>> {
    let row = with_tx!(tx, |conn| {
        let row = sqlx::query(sqlx::AssertSqlSafe(channel_by_code_sql()))
            .bind(code)
            .fetch_optional(&mut *conn)
            .await?;
        row.map(|r| channel_from_row!(&r)).transpose()?
    });
    Ok(row)
}

impl Store {
    pub async fn channel(&self, code: &str) -> Result<Option<Channel>> {
        let row = with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(channel_by_code_sql()))
                .bind(code)
                .fetch_optional(pool)
                .await?;
            row.map(|r| channel_from_row!(&r)).transpose()?
        });
        Ok(row)
    }

    pub async fn channels(&self) -> Result<Vec<Channel>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY code"
            )))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| channel_from_row!(r))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// Replaces everything but the code and the source.
    pub async fn update_channel(&self, c: &Channel, now: i64) -> Result<bool> {
        let _turn = self.write_turn().await;
        let welcome = c.welcome.as_ref().map(to_json).transpose()?;
        let (staff, tags) = (to_json(&c.staff)?, to_json(&c.tags)?);
        let n = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE channels SET name = $1, staff = $2, tags = $3, welcome = $4, config_id = $5,
                     qr_code = $6, updated_at = $7 WHERE code = $8",
            )
            .bind(&c.name)
            .bind(&staff)
            .bind(&tags)
            .bind(&welcome)
            .bind(&c.config_id)
            .bind(&c.qr_code)
            .bind(now)
            .bind(&c.code)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn delete_channel(&self, code: &str) -> Result<bool> {
        let _turn = self.write_turn().await;
        let n = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM channels WHERE code = $1")
                .bind(code)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Relations per channel code: added, still connected, lost.
    pub async fn channel_stats(&self) -> Result<Vec<(String, ChannelStats)>> {
        let rows: Vec<(String, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT channel, status, COUNT(*) FROM follows GROUP BY channel, status")
                .fetch_all(pool)
                .await?
        });
        let mut out: Vec<(String, ChannelStats)> = Vec::new();
        for (channel, status, n) in rows {
            let i = match out.iter().position(|(c, _)| *c == channel) {
                Some(i) => i,
                None => {
                    out.push((channel, ChannelStats::default()));
                    out.len() - 1
                }
            };
            let stats = &mut out[i].1;
            stats.added += n;
            match stored("follows.status", &status, FollowStatus::parse)? {
                FollowStatus::Connected => stats.connected += n,
                FollowStatus::Lost => stats.lost += n,
                FollowStatus::Deleted | FollowStatus::Transferred => {}
            }
        }
        Ok(out)
    }
}

// ---- customers and follows ----

/// Creates the customer, or refreshes its profile; tier, channel and first add stay as they were.
pub async fn upsert_customer(tx: &mut Tx, c: &Customer, now: i64) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO customers (external_userid, name, kind, corp_name, tier, channel, first_added_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (external_userid) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                 corp_name = excluded.corp_name, updated_at = excluded.updated_at",
        )
        .bind(&c.external_userid)
        .bind(&c.name)
        .bind(c.kind)
        .bind(&c.corp_name)
        .bind(&c.tier)
        .bind(&c.channel)
        .bind(c.first_added_at)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Creates the relation or refreshes it from WeCom; the channel of a relation is the one it was
/// first attributed to. A relation that had ended and is made again is connected again.
pub async fn upsert_follow(tx: &mut Tx, f: &Follow, now: i64) -> Result<()> {
    let tag_ids = to_json(&f.tag_ids)?;
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO follows (userid, external_userid, channel, state, add_way, added_at, remark,
                 description, tag_ids, status, ended_at, siyu_remark, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (userid, external_userid) DO UPDATE SET state = excluded.state,
                 add_way = excluded.add_way, added_at = excluded.added_at, remark = excluded.remark,
                 description = excluded.description, tag_ids = excluded.tag_ids,
                 status = excluded.status, ended_at = excluded.ended_at, updated_at = excluded.updated_at",
        )
        .bind(&f.userid)
        .bind(&f.external_userid)
        .bind(&f.channel)
        .bind(&f.state)
        .bind(f.add_way)
        .bind(f.added_at)
        .bind(&f.remark)
        .bind(&f.description)
        .bind(&tag_ids)
        .bind(f.status.as_str())
        .bind(f.ended_at)
        .bind(&f.siyu_remark)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

pub async fn record_contact_event(tx: &mut Tx, e: &ContactEvent) -> Result<()> {
    record_contact_events(tx, std::slice::from_ref(e)).await
}

/// [`record_contact_event`] for many, in one statement.
pub async fn record_contact_events(tx: &mut Tx, events: &[ContactEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            (
                &e.external_userid,
                &e.userid,
                e.kind.as_str(),
                &e.detail,
                e.at,
            )
        })
        .collect();
    json_rows::execute(
        tx,
        |rows| {
            format!("INSERT INTO contact_events (external_userid, userid, kind, detail, at) {rows}")
        },
        &[
            Field::Text("external_userid"),
            Field::Text("userid"),
            Field::Text("kind"),
            Field::Text("detail"),
            Field::Int("at"),
        ],
        &rows,
    )
    .await?;
    Ok(())
}

/// Ends a relation (`lost`, `deleted`, `transferred`); false when there was none to end.
pub async fn end_follow(
    tx: &mut Tx,
    userid: &UserId,
    external_userid: &ExternalUserId,
    status: FollowStatus,
    at: i64,
) -> Result<bool> {
    let n = with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE follows SET status = $1, ended_at = $2, updated_at = $2
             WHERE userid = $3 AND external_userid = $4 AND status = $5",
        )
        .bind(status.as_str())
        .bind(at)
        .bind(userid)
        .bind(external_userid)
        .bind(FollowStatus::Connected.as_str())
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

impl Store {
    /// Churn and tier events of `userid`'s customers the member was not told about yet, oldest first.
    pub async fn untold_notices(&self, userid: &UserId) -> Result<Vec<(i64, ContactEvent)>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT id, external_userid, userid, kind, detail, at FROM contact_events
                 WHERE userid = $1 AND kind IN ($2, $3, $4, $5) AND notified_at IS NULL ORDER BY id",
            )
            .bind(userid)
            .bind(ContactEventKind::Churn.as_str())
            .bind(ContactEventKind::Tier.as_str())
            .bind(ContactEventKind::GroupInvited.as_str())
            .bind(ContactEventKind::GroupRemoval.as_str())
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("id")?, contact_event_from_row!(r)?)))
                .collect::<Result<Vec<_>>>()?
        });
        Ok(rows)
    }

    pub async fn mark_told(&self, ids: &[i64], now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        for id in ids {
            with_pool!(self, |pool| {
                sqlx::query("UPDATE contact_events SET notified_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }

    pub async fn customer(&self, external_userid: &ExternalUserId) -> Result<Option<Customer>> {
        let row = with_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT external_userid, name, kind, corp_name, tier, channel, first_added_at
                 FROM customers WHERE external_userid = $1",
            )
            .bind(external_userid)
            .fetch_optional(pool)
            .await?;
            row.map(|r| customer_from_row!(&r)).transpose()?
        });
        Ok(row)
    }

    pub async fn follow(
        &self,
        userid: &UserId,
        external_userid: &ExternalUserId,
    ) -> Result<Option<Follow>> {
        let row = with_pool!(self, |pool| {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {FOLLOW_COLUMNS} FROM follows WHERE userid = $1 AND external_userid = $2"
            )))
            .bind(userid)
            .bind(external_userid)
            .fetch_optional(pool)
            .await?;
            row.map(|r| follow_from_row!(&r)).transpose()?
        });
        Ok(row)
    }

    pub async fn follows_of(&self, external_userid: &ExternalUserId) -> Result<Vec<Follow>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {FOLLOW_COLUMNS} FROM follows WHERE external_userid = $1 ORDER BY added_at"
            )))
            .bind(external_userid)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| follow_from_row!(r))
                .collect::<Result<Vec<_>>>()?
        });
        Ok(rows)
    }

    /// The members following each of these customers on connected relations, by customer and
    /// then by when the member added them: only the two ids (a tier change's fan-out needs no
    /// more, and a million relations decode far faster so).
    pub async fn connected_members_of(
        &self,
        customers: &[ExternalUserId],
    ) -> Result<Vec<(ExternalUserId, UserId)>> {
        // The relations come back as one JSON array per statement, not a row each: on SQLite
        // every row is a hand-off from the connection's thread, and a lot of tier changes asks
        // for thousands.
        let aggregate = match self.pool {
            super::Pool::Sqlite(_) => {
                "SELECT json_group_array(json_array(external_userid, userid, added_at))"
            }
            super::Pool::Postgres(_) => {
                "SELECT CAST(COALESCE(json_agg(json_build_array(external_userid, userid, added_at)), '[]') AS TEXT)"
            }
        };
        // The customers go in as one JSON parameter too, however many there are.
        let sql = format!(
            "{aggregate} FROM follows WHERE external_userid IN ({}) AND status = $2",
            json_rows::list_select(self.kind())
        );
        let customers = json_rows::rows_param(customers)?;
        let json: String = with_pool!(self, |pool| {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(&customers)
                .bind(FollowStatus::Connected.as_str())
                .fetch_one(pool)
                .await?
        });
        let mut out = serde_json::from_str::<Vec<(ExternalUserId, UserId, i64)>>(&json)
            .map_err(|e| StoreError::Corrupt(format!("the members of customers: {e}")))?;
        out.sort_by(|a, b| (&a.0, a.2, &a.1).cmp(&(&b.0, b.2, &b.1)));
        Ok(out.into_iter().map(|(c, m, _)| (c, m)).collect())
    }

    pub async fn connected_follows_of(&self, customers: &[ExternalUserId]) -> Result<Vec<Follow>> {
        self.follows_of_customers(customers, Some(FollowStatus::Connected))
            .await
    }

    /// The relations of these customers (only those in `status` when given), by customer and
    /// then by when the member added them.
    pub async fn follows_of_customers(
        &self,
        customers: &[ExternalUserId],
        status: Option<FollowStatus>,
    ) -> Result<Vec<Follow>> {
        let mut out = Vec::new();
        for chunk in customers.chunks(500) {
            let rows = with_pool!(self, |pool| {
                let mut q =
                    sqlx::QueryBuilder::new(format!("SELECT {FOLLOW_COLUMNS} FROM follows WHERE "));
                if let Some(status) = status {
                    q.push("status = ");
                    q.push_bind(status.as_str());
                    q.push(" AND ");
                }
                q.push("external_userid IN (");
                let mut sep = q.separated(", ");
                for c in chunk {
                    sep.push_bind(c);
                }
                q.push(") ORDER BY external_userid, added_at, userid");
                let rows = q.build().fetch_all(pool).await?;
                rows.iter()
                    .map(|r| follow_from_row!(r))
                    .collect::<Result<Vec<_>>>()?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// A page of the customers matching `filter`, by external_userid, after `after`.
    pub async fn search_customers(
        &self,
        filter: &CustomerFilter,
        after: Option<&ExternalUserId>,
        limit: i64,
    ) -> Result<Vec<CustomerRow>> {
        let (mut sql, mut binds) = filter.to_sql()?;
        if let Some(after) = after {
            binds.push(after.to_string());
            sql.push_str(&format!(" AND c.external_userid > ${}", binds.len()));
        }
        let sql = format!(
            "SELECT c.external_userid, c.name, c.tier, c.segment, c.channel, c.first_added_at
             FROM customers c WHERE {sql} ORDER BY c.external_userid LIMIT {limit}"
        );
        let rows = with_pool!(self, |pool| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for b in &binds {
                q = q.bind(b);
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(CustomerRow {
                        external_userid: r.try_get("external_userid")?,
                        name: r.try_get("name")?,
                        tier: r.try_get("tier")?,
                        segment: r.try_get("segment")?,
                        channel: r.try_get("channel")?,
                        first_added_at: r.try_get("first_added_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// How many customers match `filter` (every page of [`Store::search_customers`]).
    pub async fn count_matching_customers(&self, filter: &CustomerFilter) -> Result<i64> {
        let (sql, binds) = filter.to_sql()?;
        let sql = format!("SELECT COUNT(*) FROM customers c WHERE {sql}");
        let n: i64 = with_pool!(self, |pool| {
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
            for b in &binds {
                q = q.bind(b);
            }
            q.fetch_one(pool).await?
        });
        Ok(n)
    }

    /// Customers whose name, a member's remark, or external id contains `query`, limited to
    /// those `visible_to` follows when given. At most `limit`, by name.
    pub async fn find_customers(
        &self,
        query: &str,
        visible_to: Option<&UserId>,
        limit: i64,
    ) -> Result<Vec<Customer>> {
        let like = format!("%{}%", like_escaped(query));
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT DISTINCT c.external_userid, c.name, c.kind, c.corp_name, c.tier, c.channel, c.first_added_at
                 FROM customers c JOIN follows f ON f.external_userid = c.external_userid
                 WHERE (c.name LIKE $1 ESCAPE '\\' OR f.remark LIKE $1 ESCAPE '\\' OR c.external_userid = $2)
                   AND ($3 IS NULL OR c.external_userid IN (SELECT external_userid FROM follows WHERE userid = $3))
                 ORDER BY c.name LIMIT $4",
            )
            .bind(&like)
            .bind(query)
            .bind(visible_to)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| customer_from_row!(r))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// How many customers [`Store::find_customers`] would find without a limit: the same match
    /// and the same visibility.
    pub async fn count_customers(&self, query: &str, visible_to: Option<&UserId>) -> Result<i64> {
        let like = format!("%{}%", like_escaped(query));
        let n: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(DISTINCT c.external_userid)
                 FROM customers c JOIN follows f ON f.external_userid = c.external_userid
                 WHERE (c.name LIKE $1 ESCAPE '\\' OR f.remark LIKE $1 ESCAPE '\\' OR c.external_userid = $2)
                   AND ($3 IS NULL OR c.external_userid IN (SELECT external_userid FROM follows WHERE userid = $3))",
            )
            .bind(&like)
            .bind(query)
            .bind(visible_to)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// Records the note siyu wrote on a relation (to tell it apart from a hand-typed one later).
    /// `remark` is `None` when siyu left the member's own remark alone.
    pub async fn set_siyu_note(
        &self,
        userid: &UserId,
        external_userid: &ExternalUserId,
        remark: Option<&str>,
        description: &str,
        now: i64,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE follows SET siyu_remark = COALESCE($1, siyu_remark), remark = COALESCE($1, remark),
                     description = $2, updated_at = $3
                 WHERE userid = $4 AND external_userid = $5",
            )
            .bind(remark)
            .bind(description)
            .bind(now)
            .bind(userid)
            .bind(external_userid)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Edits the tag ids recorded on a relation (what siyu knows WeCom has on it).
    pub async fn edit_follow_tags(
        &self,
        userid: &UserId,
        external_userid: &ExternalUserId,
        now: i64,
        edit: impl FnOnce(&mut Vec<TagId>),
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        let Some(mut follow) = self.follow(userid, external_userid).await? else {
            return Ok(());
        };
        edit(&mut follow.tag_ids);
        let tags = to_json(&follow.tag_ids)?;
        with_pool!(self, |pool| {
            sqlx::query("UPDATE follows SET tag_ids = $1, updated_at = $2 WHERE userid = $3 AND external_userid = $4")
                .bind(&tags)
                .bind(now)
                .bind(userid)
                .bind(external_userid)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn contact_events_of(
        &self,
        external_userid: &ExternalUserId,
    ) -> Result<Vec<ContactEvent>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT external_userid, userid, kind, detail, at FROM contact_events
                 WHERE external_userid = $1 ORDER BY id",
            )
            .bind(external_userid)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| contact_event_from_row!(r))
                .collect::<Result<Vec<_>>>()?
        });
        Ok(rows)
    }
}

/// Takes `tag_id` off every relation's record (a deleted tag siyu recreated under a new id);
/// answers the relations that had it.
pub async fn drop_tag_from_follows(
    tx: &mut Tx,
    tag_id: &TagId,
    now: i64,
) -> Result<Vec<(UserId, ExternalUserId)>> {
    let pattern = format!("%{}%", to_json(&tag_id)?);
    let rows: Vec<(UserId, ExternalUserId, String)> = with_tx!(tx, |conn| {
        sqlx::query_as(
            "SELECT userid, external_userid, tag_ids FROM follows WHERE tag_ids LIKE $1
             ORDER BY userid, external_userid",
        )
        .bind(&pattern)
        .fetch_all(&mut *conn)
        .await?
    });
    let mut had = Vec::new();
    for (userid, external_userid, tags) in rows {
        let mut tags: Vec<TagId> = from_json("tag_ids", &tags)?;
        if !tags.contains(tag_id) {
            continue;
        }
        tags.retain(|t| t != tag_id);
        let tags = to_json(&tags)?;
        with_tx!(tx, |conn| {
            sqlx::query("UPDATE follows SET tag_ids = $1, updated_at = $2 WHERE userid = $3 AND external_userid = $4")
                .bind(&tags)
                .bind(now)
                .bind(&userid)
                .bind(&external_userid)
                .execute(&mut *conn)
                .await?;
        });
        had.push((userid, external_userid));
    }
    Ok(had)
}

// ---- siyu's tags ----

impl Store {
    pub async fn siyu_tags(&self) -> Result<Vec<SiyuTag>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT kind, code, name, group_name, tag_id, group_id FROM siyu_tags ORDER BY kind, code",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(SiyuTag {
                        kind: stored(
                            "siyu_tags.kind",
                            &r.try_get::<String, _>("kind")?,
                            TagKind::parse,
                        )?,
                        code: r.try_get("code")?,
                        name: r.try_get("name")?,
                        group_name: r.try_get("group_name")?,
                        tag_id: r.try_get("tag_id")?,
                        group_id: r.try_get("group_id")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        });
        Ok(rows)
    }

    pub async fn save_siyu_tag(&self, t: &SiyuTag, now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO siyu_tags (kind, code, name, group_name, tag_id, group_id, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (kind, code) DO UPDATE SET name = excluded.name, group_name = excluded.group_name,
                     tag_id = excluded.tag_id, group_id = excluded.group_id, updated_at = excluded.updated_at",
            )
            .bind(t.kind.as_str())
            .bind(&t.code)
            .bind(&t.name)
            .bind(&t.group_name)
            .bind(&t.tag_id)
            .bind(&t.group_id)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_are_stored_and_serialized_as_their_old_strings() {
        fn check<T: Serialize + Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
            expected: &[&str],
        ) {
            let names: Vec<&str> = all.iter().map(|v| as_str(*v)).collect();
            assert_eq!(names, expected);
            for v in all {
                assert_eq!(
                    serde_json::to_string(v).unwrap(),
                    format!("\"{}\"", as_str(*v))
                );
                assert_eq!(parse(as_str(*v)), Some(*v));
            }
        }
        check(
            FollowStatus::ALL,
            FollowStatus::as_str,
            FollowStatus::parse,
            &["connected", "lost", "deleted", "transferred"],
        );
        check(
            ContactEventKind::ALL,
            ContactEventKind::as_str,
            ContactEventKind::parse,
            &[
                "churn",
                "tier",
                "deleted",
                "handover",
                "transfer_fail",
                "tag_removed",
                "group_invited",
                "group_removal",
            ],
        );
        check(
            TagKind::ALL,
            TagKind::as_str,
            TagKind::parse,
            &["channel", "extra", "tier", "segment"],
        );
    }

    #[test]
    fn an_unknown_stored_value_is_corrupt_naming_column_and_value() {
        let err = stored("follows.status", "gone", FollowStatus::parse).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "stored data is invalid: follows.status has an unknown value \"gone\""
        );
        assert_eq!(
            stored("siyu_tags.kind", "tier", TagKind::parse).unwrap(),
            TagKind::Tier
        );
    }
}
