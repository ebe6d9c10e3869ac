//! Activity records, the shop's customer references, windowed metrics and tier history.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::json_rows::{self, Field};
use super::{Result, Store, StoreError, Tx, with_pool, with_tx};
use crate::ids::ExternalUserId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewActivity {
    pub id: String,
    pub customer: String,
    /// Whom it counts for (resolved through the shop's references; see the migration).
    pub who: String,
    pub kind: String,
    pub amount_fen: i64,
    pub count: i64,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TierChange {
    pub external_userid: ExternalUserId,
    pub from_tier: String,
    pub to_tier: String,
    pub reason: String,
    pub at: i64,
}

/// A customer's tier state, for evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierState {
    pub external_userid: ExternalUserId,
    pub tier: String,
    pub keep_failing_since: Option<i64>,
    pub pin: Option<Pin>,
}

/// An operator's pin on a customer's tier.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Pin {
    pub tier: String,
    pub reason: String,
    pub pinned_by: String,
    pub expires_at: Option<i64>,
}

/// Stores the records that are new; answers how many were (the rest were stored before).
pub async fn insert_activity(tx: &mut Tx, records: &[NewActivity], now: i64) -> Result<u64> {
    let mut stored = 0;
    // Chunks keep each statement well under both backends' parameter limits.
    for chunk in records.chunks(500) {
        let n = with_tx!(tx, |conn| {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO activity (id, customer, who, kind, amount_fen, count, at, received_at) ",
            );
            q.push_values(chunk, |mut row, r| {
                row.push_bind(&r.id)
                    .push_bind(&r.customer)
                    .push_bind(&r.who)
                    .push_bind(&r.kind)
                    .push_bind(r.amount_fen)
                    .push_bind(r.count)
                    .push_bind(r.at)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().execute(&mut *conn).await?.rows_affected()
        });
        stored += n;
    }
    Ok(stored)
}

/// Records a tier change and moves the customer, when the customer is still in the tier the
/// change is from; None (nothing written) when another evaluation moved them first.
pub async fn record_tier_change(
    tx: &mut Tx,
    change: &TierChange,
    keep_failing_since: Option<i64>,
) -> Result<Option<i64>> {
    let ids = record_tier_changes(tx, &[(change.clone(), keep_failing_since)]).await?;
    Ok(ids.into_iter().next().flatten())
}

/// The fields of a tier move's rows, for the customers update of [`record_tier_changes`].
const MOVE_FIELDS: &[Field] = &[
    Field::Text("customer"),
    Field::Text("to_tier"),
    Field::Int("since"),
    Field::Text("from_tier"),
    Field::Int("at"),
];

/// The fields of the `tier_history` rows [`record_tier_changes`] inserts.
const HISTORY_FIELDS: &[Field] = &[
    Field::Text("external_userid"),
    Field::Text("from_tier"),
    Field::Text("to_tier"),
    Field::Text("reason"),
    Field::Int("at"),
];

/// [`record_tier_change`] for many changes (each customer at most once) in two statements, each
/// given its rows as one JSON parameter ([`json_rows`]): answers, in order, each change's
/// `tier_history` id, or None where another evaluation moved the customer first.
pub async fn record_tier_changes(
    tx: &mut Tx,
    changes: &[(TierChange, Option<i64>)],
) -> Result<Vec<Option<i64>>> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let kind = tx.kind();
    let moves = json_rows::rows_param(
        &changes
            .iter()
            .map(|(c, since)| (&c.external_userid, &c.to_tier, *since, &c.from_tier, c.at))
            .collect::<Vec<_>>(),
    )?;
    // Only from the tier the decision saw: two evaluations that decided the same change from
    // the same state (a customer's own and the nightly one) record it once.
    let update = |returning: &str| {
        format!(
            "UPDATE customers SET tier = v.to_tier, keep_failing_since = v.since, updated_at = v.at
             FROM ({}) AS v
             WHERE customers.external_userid = v.customer AND customers.tier = v.from_tier{returning}",
            json_rows::rows_select(kind, MOVE_FIELDS)
        )
    };
    let insert = format!(
        "INSERT INTO tier_history (external_userid, from_tier, to_tier, reason, at) {}",
        json_rows::rows_select(kind, HISTORY_FIELDS)
    );
    let recorded: Vec<(i64, ExternalUserId)> = with_tx!(tx, |conn| {
        // Nearly always every customer is still where the decision saw them: then the count
        // says who moved, and no row need come back. Otherwise the update is undone and made
        // again, naming those it moved.
        sqlx::query("SAVEPOINT tier_moves")
            .execute(&mut *conn)
            .await?;
        let all_moved = sqlx::query(AssertSqlSafe(update("")))
            .bind(&moves)
            .execute(&mut *conn)
            .await?
            .rows_affected()
            == changes.len() as u64;
        let moved: Option<std::collections::HashSet<ExternalUserId>> = if all_moved {
            None
        } else {
            sqlx::query("ROLLBACK TO SAVEPOINT tier_moves")
                .execute(&mut *conn)
                .await?;
            Some(
                sqlx::query_scalar(AssertSqlSafe(update(" RETURNING external_userid")))
                    .bind(&moves)
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .collect(),
            )
        };
        sqlx::query("RELEASE SAVEPOINT tier_moves")
            .execute(&mut *conn)
            .await?;
        let history: Vec<_> = changes
            .iter()
            .filter(|(c, _)| {
                moved
                    .as_ref()
                    .is_none_or(|m| m.contains(&c.external_userid))
            })
            .map(|(c, _)| {
                (
                    &c.external_userid,
                    &c.from_tier,
                    &c.to_tier,
                    &c.reason,
                    c.at,
                )
            })
            .collect();
        if history.is_empty() {
            Vec::new()
        } else if kind == super::DbKind::Sqlite {
            // sqlx hands each returned row across threads, one wake-up each: the lot's ids come
            // back as one JSON row instead. The transaction holds SQLite's only write turn, so
            // the rows above the largest id before the insert are the insert's own.
            let before: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM tier_history")
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query(AssertSqlSafe(insert.as_str()))
                .bind(json_rows::rows_param(&history)?)
                .execute(&mut *conn)
                .await?;
            let ids: String = sqlx::query_scalar(
                "SELECT json_group_array(json_array(id, external_userid)) FROM tier_history WHERE id > $1",
            )
            .bind(before)
            .fetch_one(&mut *conn)
            .await?;
            serde_json::from_str::<Vec<(i64, ExternalUserId)>>(&ids)
                .map_err(|e| StoreError::Corrupt(format!("the ids of new tier history: {e}")))?
        } else {
            sqlx::query_as(AssertSqlSafe(format!(
                "{insert} RETURNING id, external_userid"
            )))
            .bind(json_rows::rows_param(&history)?)
            .fetch_all(&mut *conn)
            .await?
        }
    });
    let by_customer: HashMap<ExternalUserId, i64> =
        recorded.into_iter().map(|(id, who)| (who, id)).collect();
    Ok(changes
        .iter()
        .map(|(c, _)| by_customer.get(&c.external_userid).copied())
        .collect())
}

/// Maps the shop's ids to a customer, replacing earlier mappings of the same ids; answers the
/// customers those ids were taken from (their metrics change too).
pub async fn set_customer_refs(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    refs: &[String],
) -> Result<Vec<ExternalUserId>> {
    let mut previous = Vec::new();
    for r in refs {
        with_tx!(tx, |conn| {
            let before: Option<ExternalUserId> =
                sqlx::query_scalar("SELECT external_userid FROM customer_refs WHERE ref = $1")
                    .bind(r)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(before) = before.filter(|b| b != external_userid) {
                previous.push(before);
            }
            sqlx::query(
                "INSERT INTO customer_refs (ref, external_userid) VALUES ($1, $2)
                 ON CONFLICT (ref) DO UPDATE SET external_userid = excluded.external_userid",
            )
            .bind(r)
            .bind(external_userid)
            .execute(&mut *conn)
            .await?;
            // Records sent under this id count for the customer from now on.
            sqlx::query("UPDATE activity SET who = $1 WHERE customer = $2")
                .bind(external_userid)
                .bind(r)
                .execute(&mut *conn)
                .await?;
        });
    }
    previous.sort();
    previous.dedup();
    Ok(previous)
}

/// The stored records among `ids` (to tell a batch sent again from an id reused for another
/// record).
pub async fn activity_by_ids(tx: &mut Tx, ids: &[String]) -> Result<Vec<NewActivity>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, String, String, String, i64, i64, i64)> = with_tx!(tx, |conn| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT id, customer, who, kind, amount_fen, count, at FROM activity WHERE id IN (",
            );
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id);
            }
            q.push(")");
            q.build_query_as().fetch_all(&mut *conn).await?
        });
        out.extend(
            rows.into_iter().map(
                |(id, customer, who, kind, amount_fen, count, at)| NewActivity {
                    id,
                    customer,
                    who,
                    kind,
                    amount_fen,
                    count,
                    at,
                },
            ),
        );
    }
    Ok(out)
}

/// A customer's value segment change: from (None: first scored), to, and the scores.
pub type SegmentMove = (ExternalUserId, Option<String>, String, String);

/// Records customers' new value segments, and each change in the segment history.
pub async fn set_segments(tx: &mut Tx, changes: &[SegmentMove], now: i64) -> Result<()> {
    for (id, from, segment, rfm) in changes {
        with_tx!(tx, |conn| {
            sqlx::query("UPDATE customers SET segment = $1, rfm = $2 WHERE external_userid = $3")
                .bind(segment)
                .bind(rfm)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO segment_history (external_userid, from_segment, to_segment, rfm, at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(from)
            .bind(segment)
            .bind(rfm)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        });
    }
    Ok(())
}

/// A customer's tier state from a row of [`Store::for_each_customer_metrics`]'s people query.
macro_rules! tier_state_from_row {
    ($p:expr) => {{
        let p = &$p;
        let pin_tier: Option<String> = p.try_get(3)?;
        TierState {
            external_userid: p.try_get(0)?,
            tier: p.try_get(1)?,
            keep_failing_since: p.try_get(2)?,
            pin: match pin_tier {
                Some(tier) => Some(Pin {
                    tier,
                    reason: p.try_get(4)?,
                    pinned_by: p.try_get(5)?,
                    expires_at: p.try_get(6)?,
                }),
                None => None,
            },
        }
    }};
}

/// Customers' tier states, each with the values of the terms asked for (in their order), as
/// [`Store::for_each_customer_metrics`] sends them: the values of a whole batch in one vector, so
/// a customer costs no allocation of its own for them.
#[derive(Debug, Default)]
pub struct MetricsBatch {
    states: Vec<TierState>,
    /// `width` values per state, in the states' order.
    values: Vec<i64>,
    width: usize,
}

impl MetricsBatch {
    fn with_width(width: usize) -> MetricsBatch {
        MetricsBatch {
            states: Vec::with_capacity(METRICS_BATCH),
            values: Vec::with_capacity(METRICS_BATCH * width),
            width,
        }
    }

    /// Adds a customer; `values` must give exactly `width` values.
    fn push(&mut self, state: TierState, values: impl IntoIterator<Item = i64>) {
        self.states.push(state);
        self.values.extend(values);
        debug_assert_eq!(self.values.len(), self.states.len() * self.width);
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    fn is_full(&self) -> bool {
        self.states.len() >= METRICS_BATCH
    }

    /// Takes the batch, leaving an empty one of the same width.
    fn take(&mut self) -> MetricsBatch {
        std::mem::replace(self, MetricsBatch::with_width(self.width))
    }

    /// Each customer's state with its values, in order.
    pub fn for_each(self, mut each: impl FnMut(TierState, &[i64])) {
        let width = self.width;
        for (i, state) in self.states.into_iter().enumerate() {
            each(state, &self.values[i * width..(i + 1) * width]);
        }
    }
}

/// Rows per batch sent by [`Store::for_each_customer_metrics`]: one wake-up of the consumer per
/// batch, not per customer.
const METRICS_BATCH: usize = 1024;

/// The columns of the people part, before the terms.
const PEOPLE_COLUMNS: usize = 7;

const PEOPLE_SELECT: &str = "SELECT c.external_userid, c.tier, c.keep_failing_since, p.tier, p.reason, p.pinned_by, p.expires_at";
const PEOPLE_FROM: &str =
    "FROM customers c LEFT JOIN tier_pins p ON p.external_userid = c.external_userid";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
enum Bind {
    Int(i64),
    Text(String),
}

/// A statement's text and its parameters, numbered as the dialect numbers them.
struct Sql {
    dialect: Dialect,
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: Bind) -> &mut Sql {
        self.binds.push(value);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => self.text.push_str(&format!("${}", self.binds.len())),
        }
        self
    }

    /// Ids in byte order (as Rust and SQLite compare them) on PostgreSQL too: the "C" collation.
    fn bytewise(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        }
    }
}

/// `SELECT a.who, t0, t1, ...`: every customer's term sums, in id order, from one pass over
/// the activity in the widest window (of `only`'s customers when given). Each term is a `SUM`
/// with a `FILTER`, and a term over the widest window leaves its time to the `WHERE`: per
/// record this is the cheapest form SQLite evaluates (about a quarter less work than `CASE`s).
fn push_sums(q: &mut Sql, now: i64, terms: &[(String, i64)], only: Option<&[ExternalUserId]>) {
    let since = terms.iter().map(|(_, w)| now - w).min().unwrap_or(now);
    q.push("SELECT a.who");
    for (i, (metric, window)) in terms.iter().enumerate() {
        let narrower = now - window > since;
        match metric.as_str() {
            "spend" => {
                q.push(", CAST(SUM(CASE a.kind WHEN 'order' THEN a.amount_fen WHEN 'refund' THEN -a.amount_fen END)");
                if narrower {
                    q.push(" FILTER (WHERE a.at >= ")
                        .bind(Bind::Int(now - window))
                        .push(")");
                }
            }
            kind => {
                q.push(", CAST(SUM(a.count) FILTER (WHERE a.kind = ");
                match kind {
                    "orders" => q.push("'order'"),
                    _ => q.bind(Bind::Text(kind.to_string())),
                };
                if narrower {
                    q.push(" AND a.at >= ").bind(Bind::Int(now - window));
                }
                q.push(")");
            }
        }
        q.push(&format!(" AS BIGINT) AS t{i}"));
    }
    q.push(" FROM activity a WHERE a.at BETWEEN ")
        .bind(Bind::Int(since));
    q.push(" AND ").bind(Bind::Int(now));
    push_only(q, "a.who", only);
    q.push(" GROUP BY a.who");
}

fn push_only(q: &mut Sql, column: &str, only: Option<&[ExternalUserId]>) {
    if let Some(list) = only {
        q.push(&format!(" AND {column} IN ("));
        for (i, c) in list.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            q.bind(Bind::Text(c.as_str().to_string()));
        }
        q.push(")");
    }
}

/// The customers (of `only` when given) with their pins and term sums, in id order: the sums
/// are joined in by the database.
fn joined_sql(
    dialect: Dialect,
    now: i64,
    terms: &[(String, i64)],
    only: Option<&[ExternalUserId]>,
) -> (String, Vec<Bind>) {
    let mut q = Sql::new(dialect);
    q.push(PEOPLE_SELECT);
    for i in 0..terms.len() {
        q.push(&format!(", s.t{i}"));
    }
    q.push(" ").push(PEOPLE_FROM);
    if !terms.is_empty() {
        q.push(" LEFT JOIN (");
        push_sums(&mut q, now, terms, only);
        q.push(") s ON s.who = c.external_userid");
    }
    q.push(" WHERE 1 = 1");
    push_only(&mut q, "c.external_userid", only);
    let order = format!(" ORDER BY c.external_userid{}", q.bytewise());
    q.push(&order);
    (q.text, q.binds)
}

/// Everyone's rows for [`Store::for_each_customer_metrics`] from a SQLite file, on the calling
/// (blocking) thread and one more: the sums are read on a thread of their own while this one
/// reads the customers and merges the two, both in id order along their indexes, with nothing
/// materialised. On two cores the `GROUP BY` (most of the work) runs beside the customers' read
/// and the decisions instead of after them.
///
/// Connections of their own, without sqlx, because sqlx hands every row from its connection's
/// thread to the reading task (a wake-up and a copy of each value per row): for a million
/// customers that was most of the evaluation. Each read is one snapshot; the two may be a moment
/// apart, as a record arriving just after a one-snapshot read would be, and every change written
/// from them is still guarded by the tier it was decided from.
fn read_everyone_sqlite(
    file: &std::path::Path,
    now: i64,
    terms: &[(String, i64)],
    each: &tokio::sync::mpsc::Sender<MetricsBatch>,
) -> Result<u64> {
    if terms.is_empty() {
        return read_people_sqlite(file, terms.len(), None, each);
    }
    let (sums_tx, sums_rx) = std::sync::mpsc::sync_channel(4);
    std::thread::scope(|scope| {
        let sums = std::thread::Builder::new()
            .name("siyu-tier-sums".into())
            .spawn_scoped(scope, || read_sums_sqlite(file, now, terms, sums_tx))
            .map_err(|e| StoreError::Corrupt(format!("starting the tier read: {e}")))?;
        let people = read_people_sqlite(file, terms.len(), Some(sums_rx), each);
        // The receiver is gone by now, so a sums read still going stops at its next batch.
        let sums = sums
            .join()
            .map_err(|_| StoreError::Corrupt("the tier sums read panicked".into()))?;
        // The sums' own error first: it is why the customers' read stopped short.
        sums?;
        people
    })
}

fn sqlite_read_error(e: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(format!("reading the tier metrics: {e}"))
}

/// A read-only connection for the tier read, in a read transaction (one snapshot).
fn open_tier_read(file: &std::path::Path) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_read_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite_read_error)?;
    // One pass in index order: a page is read once, so a small cache loses nothing (the
    // operating system's holds the file) and keeps the two reads' memory down.
    conn.execute_batch("PRAGMA cache_size = -512; BEGIN")
        .map_err(sqlite_read_error)?;
    Ok(conn)
}

/// Sums of a batch of customers, in id order: the ids one after another in one string, so a
/// batch costs three allocations however many customers it holds.
struct SumsBatch {
    ids: String,
    /// Where each id ends in `ids`.
    ends: Vec<usize>,
    /// `terms` values per id.
    values: Vec<i64>,
}

enum SumsMessage {
    Batch(SumsBatch),
    /// Every sum was sent: without it, a closed channel means the read failed.
    End,
}

/// The `GROUP BY who` of [`push_sums`] over everyone, sent in batches in id order.
fn read_sums_sqlite(
    file: &std::path::Path,
    now: i64,
    terms: &[(String, i64)],
    to: std::sync::mpsc::SyncSender<SumsMessage>,
) -> Result<()> {
    let conn = open_tier_read(file)?;
    let mut sql = Sql::new(Dialect::Sqlite);
    push_sums(&mut sql, now, terms, None);
    sql.push(" ORDER BY a.who");
    let mut statement = conn.prepare(&sql.text).map_err(sqlite_read_error)?;
    let binds = sql.binds.iter().map(|b| match b {
        Bind::Int(v) => rusqlite::types::Value::Integer(*v),
        Bind::Text(v) => rusqlite::types::Value::Text(v.clone()),
    });
    let mut rows = statement
        .query(rusqlite::params_from_iter(binds))
        .map_err(sqlite_read_error)?;
    let new_batch = || SumsBatch {
        ids: String::with_capacity(METRICS_BATCH * 16),
        ends: Vec::with_capacity(METRICS_BATCH),
        values: Vec::with_capacity(METRICS_BATCH * terms.len()),
    };
    let mut batch = new_batch();
    while let Some(r) = rows.next().map_err(sqlite_read_error)? {
        let who = r.get_ref(0).map_err(sqlite_read_error)?;
        batch
            .ids
            .push_str(who.as_str().map_err(|e| sqlite_read_error(e.into()))?);
        batch.ends.push(batch.ids.len());
        for i in 0..terms.len() {
            let v: Option<i64> = r.get(i + 1).map_err(sqlite_read_error)?;
            batch.values.push(v.unwrap_or(0));
        }
        if batch.ends.len() == METRICS_BATCH
            && to
                .send(SumsMessage::Batch(std::mem::replace(
                    &mut batch,
                    new_batch(),
                )))
                .is_err()
        {
            // The customers' read stopped: so does this one.
            return Ok(());
        }
    }
    if !batch.ends.is_empty() {
        let _ = to.send(SumsMessage::Batch(batch));
    }
    let _ = to.send(SumsMessage::End);
    Ok(())
}

/// Where the customers' read is in the sums: the batch at hand and the next id in it.
struct SumsCursor {
    from: std::sync::mpsc::Receiver<SumsMessage>,
    batch: SumsBatch,
    next: usize,
    ended: bool,
}

impl SumsCursor {
    fn new(from: std::sync::mpsc::Receiver<SumsMessage>) -> SumsCursor {
        SumsCursor {
            from,
            batch: SumsBatch {
                ids: String::new(),
                ends: Vec::new(),
                values: Vec::new(),
            },
            next: 0,
            ended: false,
        }
    }

    /// The values of `id` (`width` of them) when it has records; the sums of ids before it
    /// (records of a reference no customer holds) are passed over. Ids must come in order.
    fn values_of(&mut self, id: &str, width: usize) -> Result<Option<&[i64]>> {
        loop {
            if self.next == self.batch.ends.len() {
                if self.ended {
                    return Ok(None);
                }
                match self.from.recv() {
                    Ok(SumsMessage::Batch(b)) => {
                        self.batch = b;
                        self.next = 0;
                    }
                    Ok(SumsMessage::End) => {
                        self.ended = true;
                        return Ok(None);
                    }
                    // The sums read failed: its error is reported after this one stops.
                    Err(_) => return Err(StoreError::Corrupt("the tier sums read stopped".into())),
                }
                continue;
            }
            let start = match self.next {
                0 => 0,
                n => self.batch.ends[n - 1],
            };
            let who = &self.batch.ids[start..self.batch.ends[self.next]];
            match who.cmp(id) {
                std::cmp::Ordering::Less => self.next += 1,
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Equal => {
                    let at = self.next * width;
                    self.next += 1;
                    return Ok(Some(&self.batch.values[at..at + width]));
                }
            }
        }
    }
}

/// Everyone's tier state in id order, each with its sums from `sums` (zeros without records),
/// sent to `each` in batches.
fn read_people_sqlite(
    file: &std::path::Path,
    width: usize,
    sums: Option<std::sync::mpsc::Receiver<SumsMessage>>,
    each: &tokio::sync::mpsc::Sender<MetricsBatch>,
) -> Result<u64> {
    let conn = open_tier_read(file)?;
    let mut statement = conn
        .prepare(&format!(
            "{PEOPLE_SELECT} {PEOPLE_FROM} ORDER BY c.external_userid"
        ))
        .map_err(sqlite_read_error)?;
    let mut people = statement.query([]).map_err(sqlite_read_error)?;
    let mut sums = sums.map(SumsCursor::new);
    let mut seen = 0u64;
    let mut batch = MetricsBatch::with_width(width);
    while let Some(p) = people.next().map_err(sqlite_read_error)? {
        let pin_tier: Option<String> = p.get(3).map_err(sqlite_read_error)?;
        let state = TierState {
            external_userid: ExternalUserId::from(
                p.get::<_, String>(0).map_err(sqlite_read_error)?,
            ),
            tier: p.get(1).map_err(sqlite_read_error)?,
            keep_failing_since: p.get(2).map_err(sqlite_read_error)?,
            pin: match pin_tier {
                Some(tier) => Some(Pin {
                    tier,
                    reason: p.get(4).map_err(sqlite_read_error)?,
                    pinned_by: p.get(5).map_err(sqlite_read_error)?,
                    expires_at: p.get(6).map_err(sqlite_read_error)?,
                }),
                None => None,
            },
        };
        let values = match sums.as_mut() {
            Some(cursor) => cursor.values_of(state.external_userid.as_str(), width)?,
            None => None,
        };
        match values {
            Some(values) => batch.push(state, values.iter().copied()),
            None => batch.push(state, std::iter::repeat_n(0, width)),
        }
        if batch.is_full() {
            seen += batch.len() as u64;
            if each.blocking_send(batch.take()).is_err() {
                // The consumer stopped (it failed): stop reading.
                return Ok(seen);
            }
        }
    }
    seen += batch.len() as u64;
    if !batch.is_empty() {
        let _ = each.blocking_send(batch);
    }
    Ok(seen)
}

impl Store {
    /// The external_userid each of `keys` maps to, for those that are shop references.
    pub async fn refs_of(&self, keys: &[String]) -> Result<HashMap<String, ExternalUserId>> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(500) {
            let rows: Vec<(String, ExternalUserId)> = with_pool!(self, |pool| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT ref, external_userid FROM customer_refs WHERE ref IN (",
                );
                let mut sep = q.separated(", ");
                for k in chunk {
                    sep.push_bind(k);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// The customers (external_userid) that activity ids or references point to and that exist.
    pub async fn resolve_customers(&self, keys: &[String]) -> Result<Vec<ExternalUserId>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<ExternalUserId> = Vec::new();
        for chunk in keys.chunks(500) {
            let found: Vec<ExternalUserId> = with_pool!(self, |pool| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT DISTINCT c.external_userid FROM customers c
                     LEFT JOIN customer_refs r ON r.external_userid = c.external_userid
                     WHERE c.external_userid IN (",
                );
                let mut list = q.separated(", ");
                for k in chunk {
                    list.push_bind(k);
                }
                q.push(") OR r.ref IN (");
                let mut list = q.separated(", ");
                for k in chunk {
                    list.push_bind(k);
                }
                q.push(")");
                q.build_query_scalar().fetch_all(pool).await?
            });
            out.extend(found);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every customer's tier state (and pin) with the value of every `(metric, window ms)` term
    /// ending at `now`, in id order (byte order on both backends), in batches. Metrics are
    /// `spend` (order amounts minus refunds, fen), `orders` (order count) or an activity kind
    /// (its count).
    ///
    /// Every term comes from one pass over the activity: a single `GROUP BY who` along the
    /// covering index `activity_who` sums all of a customer's terms at once (each a `CASE` on the
    /// record's kind and time), so the cost is one read of the records in the widest window,
    /// however many terms the rules have. The batches go to `each` as they are read, so memory
    /// stays bounded however many customers there are, and a slow consumer slows the read down.
    ///
    /// Everyone on a SQLite file is read on a thread of its own over a connection of its own
    /// (see [`read_everyone_sqlite`]); otherwise (PostgreSQL, or a list of customers) the database
    /// joins the sums to the customers in one query.
    pub async fn for_each_customer_metrics(
        &self,
        now: i64,
        terms: &[(String, i64)],
        customers: Option<&[ExternalUserId]>,
        each: tokio::sync::mpsc::Sender<MetricsBatch>,
    ) -> Result<u64> {
        use futures_util::TryStreamExt;
        if let (None, super::Pool::Sqlite(pool)) = (customers, &self.pool) {
            let file = pool.connect_options().get_filename().to_path_buf();
            if file.is_file() {
                let terms = terms.to_vec();
                return tokio::task::spawn_blocking(move || {
                    read_everyone_sqlite(&file, now, &terms, &each)
                })
                .await
                .map_err(|e| StoreError::Corrupt(format!("the tier read stopped: {e}")))?;
            }
        }
        let dialect = match self.pool {
            super::Pool::Sqlite(_) => Dialect::Sqlite,
            super::Pool::Postgres(_) => Dialect::Postgres,
        };
        let mut seen = 0u64;
        let lists: Vec<Option<&[ExternalUserId]>> = match customers {
            Some(list) => list.chunks(500).map(Some).collect(),
            None => vec![None],
        };
        for only in lists {
            let (sql, binds) = joined_sql(dialect, now, terms, only);
            with_pool!(self, |pool| {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for b in binds {
                    q = match b {
                        Bind::Int(v) => q.bind(v),
                        Bind::Text(v) => q.bind(v),
                    };
                }
                let mut rows = q.fetch(pool);
                let mut batch = MetricsBatch::with_width(terms.len());
                let mut values = Vec::with_capacity(terms.len());
                while let Some(r) = rows.try_next().await? {
                    let state = tier_state_from_row!(r);
                    values.clear();
                    for i in 0..terms.len() {
                        values.push(
                            r.try_get::<Option<i64>, _>(PEOPLE_COLUMNS + i)?
                                .unwrap_or(0),
                        );
                    }
                    batch.push(state, values.iter().copied());
                    if batch.is_full() {
                        seen += batch.len() as u64;
                        if each.send(batch.take()).await.is_err() {
                            // The consumer stopped (it failed): stop reading.
                            return Ok(seen);
                        }
                    }
                }
                seen += batch.len() as u64;
                if !batch.is_empty() && each.send(batch).await.is_err() {
                    return Ok(seen);
                }
            });
        }
        Ok(seen)
    }

    /// Tier state of the given customers, or of everyone.
    pub async fn tier_states(
        &self,
        customers: Option<&[ExternalUserId]>,
    ) -> Result<Vec<TierState>> {
        let rows = with_pool!(self, |pool| {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT external_userid, tier, keep_failing_since FROM customers",
            );
            if let Some(list) = customers {
                if list.is_empty() {
                    return Ok(Vec::new());
                }
                q.push(" WHERE external_userid IN (");
                let mut sep = q.separated(", ");
                for c in list {
                    sep.push_bind(c);
                }
                q.push(")");
            }
            q.push(" ORDER BY external_userid");
            let rows = q.build().fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(TierState {
                        external_userid: r.try_get("external_userid")?,
                        tier: r.try_get("tier")?,
                        keep_failing_since: r.try_get("keep_failing_since")?,
                        pin: None,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }

    /// Records when customers started (or stopped, with `None`) failing their keep rules, in
    /// one transaction.
    pub async fn set_keep_failing_since(
        &self,
        updates: &[(ExternalUserId, Option<i64>)],
    ) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        json_rows::execute(
            &mut tx,
            |rows| {
                format!(
                    "UPDATE customers SET keep_failing_since = v.since FROM ({rows}) AS v
                     WHERE customers.external_userid = v.customer"
                )
            },
            &[Field::Text("customer"), Field::Int("since")],
            updates,
        )
        .await?;
        tx.commit().await
    }

    /// Pins a customer's tier (replacing an earlier pin), or unpins with `None`.
    pub async fn set_pin(
        &self,
        external_userid: &ExternalUserId,
        pin: Option<&Pin>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        with_tx!(tx, |conn| {
            sqlx::query("DELETE FROM tier_pins WHERE external_userid = $1")
                .bind(external_userid)
                .execute(&mut *conn)
                .await?;
            if let Some(p) = pin {
                sqlx::query(
                    "INSERT INTO tier_pins (external_userid, tier, reason, pinned_by, expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(external_userid)
                .bind(&p.tier)
                .bind(&p.reason)
                .bind(&p.pinned_by)
                .bind(p.expires_at)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
        });
        tx.commit().await
    }

    pub async fn pin(&self, external_userid: &ExternalUserId) -> Result<Option<Pin>> {
        let row = with_pool!(self, |pool| {
            let row = sqlx::query("SELECT tier, reason, pinned_by, expires_at FROM tier_pins WHERE external_userid = $1")
                .bind(external_userid)
                .fetch_optional(pool)
                .await?;
            row.map(|r| {
                Ok::<_, sqlx::Error>(Pin {
                    tier: r.try_get("tier")?,
                    reason: r.try_get("reason")?,
                    pinned_by: r.try_get("pinned_by")?,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .transpose()?
        });
        Ok(row)
    }

    pub async fn tier_history(&self, external_userid: &ExternalUserId) -> Result<Vec<TierChange>> {
        let rows = with_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT external_userid, from_tier, to_tier, reason, at FROM tier_history
                 WHERE external_userid = $1 ORDER BY id",
            )
            .bind(external_userid)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(TierChange {
                        external_userid: r.try_get("external_userid")?,
                        from_tier: r.try_get("from_tier")?,
                        to_tier: r.try_get("to_tier")?,
                        reason: r.try_get("reason")?,
                        at: r.try_get("at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows)
    }
}

impl Store {
    /// One plain pass over every activity row (the benchmark's baseline).
    pub async fn scan_activity(&self) -> Result<i64> {
        let n: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM activity WHERE amount_fen + count >= 0")
                .fetch_one(pool)
                .await?
        });
        Ok(n)
    }

    /// Fills an empty database with `customers` customers, each followed by one of 50 members,
    /// and `activity` records spread over the
    /// last 120 days (80% orders, 5% refunds, 15% referrals), generated inside the database.
    pub async fn generate_tier_bench_data(
        &self,
        customers: u64,
        activity: u64,
        now: i64,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        // The two dialects count and pad differently; the rest is shared.
        let (series, pad_i, pad_mod) = match self.pool {
            super::Pool::Sqlite(_) => (
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) SELECT i FROM n",
                "printf('%012d', i)",
                "printf('%012d', i % $2)",
            ),
            super::Pool::Postgres(_) => (
                "SELECT generate_series(0, $1 - 1) AS i",
                "LPAD(CAST(i AS TEXT), 12, '0')",
                "LPAD(CAST(i % $2 AS TEXT), 12, '0')",
            ),
        };
        with_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO customers (external_userid, name, kind, corp_name, tier, channel, first_added_at, updated_at)
                 SELECT 'wm' || {pad_i}, 'c' || CAST(i AS TEXT), 1, '', 'member', 'unattributed', $2, $2
                 FROM ({series}) AS s"
            )))
            .bind(customers as i64)
            .bind(now)
            .execute(pool)
            .await?;
            // Each customer follows one of 50 members, so a tier change fans out as it would.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO follows (userid, external_userid, channel, state, add_way, added_at, remark,
                     description, tag_ids, status, ended_at, siyu_remark, updated_at)
                 SELECT 'staff' || CAST(i % 50 AS TEXT), 'wm' || {pad_i}, 'unattributed', NULL, 1, $2, '',
                     '', '[]', 'connected', NULL, NULL, $2
                 FROM ({series}) AS s"
            )))
            .bind(customers as i64)
            .bind(now)
            .execute(pool)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO activity (id, customer, who, kind, amount_fen, count, at, received_at)
                 SELECT 'a' || CAST(i AS TEXT),
                        'wm' || {pad_mod},
                        'wm' || {pad_mod},
                        CASE WHEN i % 20 < 16 THEN 'order' WHEN i % 20 = 16 THEN 'refund' ELSE 'referral' END,
                        CASE WHEN i % 20 < 17 THEN (i * 7919) % 40000 ELSE 0 END,
                        1,
                        $3 - (i % 120) * 86400000 - (i % 86400) * 1000,
                        $3
                 FROM ({series}) AS s"
            )))
            .bind(activity as i64)
            .bind(customers.max(1) as i64)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A night's new activity for the bench data: a random `fraction` of the customers (each
    /// drawn on its own, so about that share) gets one record at `at`, an order or, one time in
    /// five, a refund, of a random amount; in one statement. Returns how many were added.
    pub async fn generate_tier_bench_nightly(&self, fraction: f64, at: i64) -> Result<u64> {
        let _turn = self.write_turn().await;
        // The draw is made by the database per row, against a threshold in millionths, so the
        // rows never travel through siyu; the dialects draw differently (SQLite's random() is a
        // 64-bit integer, PostgreSQL's a float in [0, 1)).
        let (pick, kind, amount) = match self.pool {
            super::Pool::Sqlite(_) => (
                "abs(random() % 1000000) < $1",
                "CASE WHEN abs(random() % 5) = 0 THEN 'refund' ELSE 'order' END",
                "abs(random() % 40000)",
            ),
            super::Pool::Postgres(_) => (
                "floor(random() * 1000000) < $1",
                "CASE WHEN random() < 0.2 THEN 'refund' ELSE 'order' END",
                "CAST(floor(random() * 40000) AS BIGINT)",
            ),
        };
        let threshold = (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as i64;
        let added = with_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO activity (id, customer, who, kind, amount_fen, count, at, received_at)
                 SELECT $2 || external_userid, external_userid, external_userid,
                        {kind}, {amount}, 1, $3, $3
                 FROM customers WHERE {pick}"
            )))
            .bind(threshold)
            // The night's time in the id keeps a second night's records apart from the first's.
            .bind(format!("n{at}-"))
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(added)
    }
}

impl Store {
    /// Customers per tier.
    pub async fn customers_per_tier(&self) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT tier, COUNT(*) FROM customers GROUP BY tier ORDER BY tier")
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Tier moves since `since`: (from, to, how many).
    pub async fn tier_moves_since(&self, since: i64) -> Result<Vec<(String, String, i64)>> {
        let rows: Vec<(String, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT from_tier, to_tier, COUNT(*) FROM tier_history WHERE at >= $1
                 GROUP BY from_tier, to_tier ORDER BY from_tier, to_tier",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}

/// One customer's RFM inputs.
#[derive(Debug, Clone)]
pub struct RfmInput {
    pub external_userid: ExternalUserId,
    pub segment: Option<String>,
    /// Unix ms of the last order in the window.
    pub last_order: Option<i64>,
    pub orders: i64,
    pub spend_fen: i64,
}

impl Store {
    /// Every customer's last order, order count and spend since `since`.
    pub async fn rfm_inputs(&self, since: i64) -> Result<Vec<RfmInput>> {
        // who, last order, orders, spend
        type Sums = (String, Option<i64>, Option<i64>, Option<i64>);
        let sums: Vec<Sums> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT who, MAX(CASE WHEN kind = 'order' THEN at ELSE NULL END),
                        CAST(SUM(CASE WHEN kind = 'order' THEN count ELSE 0 END) AS BIGINT),
                        CAST(SUM(CASE WHEN kind = 'order' THEN amount_fen WHEN kind = 'refund' THEN -amount_fen ELSE 0 END) AS BIGINT)
                 FROM activity WHERE at >= $1 GROUP BY who",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        let by_who: HashMap<String, (Option<i64>, i64, i64)> = sums
            .into_iter()
            .map(|(w, l, o, s)| (w, (l, o.unwrap_or(0), s.unwrap_or(0))))
            .collect();
        let customers: Vec<(ExternalUserId, Option<String>)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT external_userid, segment FROM customers ORDER BY external_userid",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(customers
            .into_iter()
            .map(|(id, segment)| {
                let (last_order, orders, spend_fen) =
                    by_who.get(id.as_str()).copied().unwrap_or((None, 0, 0));
                RfmInput {
                    external_userid: id,
                    segment,
                    last_order,
                    orders,
                    spend_fen,
                }
            })
            .collect())
    }

    /// Whether any activity of `kind` was ever received.
    pub async fn activity_kind_exists(&self, kind: &str) -> Result<bool> {
        let found: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT 1 FROM activity WHERE kind = $1 LIMIT 1")
                .bind(kind)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }

    /// A customer's value segment changes, oldest first: `{from, to, rfm, at}`.
    pub async fn segment_history(
        &self,
        external_userid: &ExternalUserId,
    ) -> Result<Vec<serde_json::Value>> {
        let rows: Vec<(Option<String>, String, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT from_segment, to_segment, rfm, at FROM segment_history
                 WHERE external_userid = $1 ORDER BY id",
            )
            .bind(external_userid)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(from, to, rfm, at)| serde_json::json!({ "from": from, "to": to, "rfm": rfm, "at": at }))
            .collect())
    }

    /// A customer's newest activity records (at most `limit`), newest first.
    pub async fn recent_activity(
        &self,
        external_userid: &ExternalUserId,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>> {
        let rows: Vec<(String, String, i64, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT id, kind, amount_fen, count, at FROM activity
                 WHERE who = $1 ORDER BY at DESC, id LIMIT $2",
            )
            .bind(external_userid)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, kind, fen, count, at)| {
                serde_json::json!({ "id": id, "kind": kind, "amount_fen": fen, "count": count, "at": at })
            })
            .collect())
    }

    /// A customer's value segment and scores.
    pub async fn segment_of(
        &self,
        external_userid: &ExternalUserId,
    ) -> Result<Option<(String, String)>> {
        let row: Option<(Option<String>, Option<String>)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT segment, rfm FROM customers WHERE external_userid = $1")
                .bind(external_userid)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.and_then(|(s, r)| Some((s?, r.unwrap_or_default()))))
    }

    /// Customers per value segment.
    pub async fn customers_per_segment(&self) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT segment, COUNT(*) FROM customers WHERE segment IS NOT NULL GROUP BY segment ORDER BY segment")
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }
}

/// A change of the tier rules made through the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RulesChange {
    pub id: i64,
    pub changed_by: String,
    pub at: i64,
}

impl Store {
    /// The tier rules (JSON) of the latest change made through the API, if any.
    pub async fn current_tier_rules(&self) -> Result<Option<String>> {
        let rules: Option<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT rules FROM tier_rules ORDER BY id DESC LIMIT 1")
                .fetch_optional(pool)
                .await?
        });
        Ok(rules)
    }

    pub async fn save_tier_rules(
        &self,
        rules_json: &str,
        changed_by: &str,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        with_tx!(tx, |conn| {
            sqlx::query("INSERT INTO tier_rules (rules, changed_by, at) VALUES ($1, $2, $3)")
                .bind(rules_json)
                .bind(changed_by)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        });
        tx.commit().await
    }

    pub async fn tier_rules_history(&self) -> Result<Vec<RulesChange>> {
        let rows: Vec<(i64, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT id, changed_by, at FROM tier_rules ORDER BY id DESC LIMIT 100")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, changed_by, at)| RulesChange { id, changed_by, at })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(rows: &[(&str, i64)]) -> SumsMessage {
        let mut batch = SumsBatch {
            ids: String::new(),
            ends: Vec::new(),
            values: Vec::new(),
        };
        for (id, v) in rows {
            batch.ids.push_str(id);
            batch.ends.push(batch.ids.len());
            batch.values.push(*v);
        }
        SumsMessage::Batch(batch)
    }

    /// The merge finds each customer's sums across batches, passes over the sums of ids no
    /// customer holds, and gives none to customers without records.
    #[test]
    fn the_sums_cursor_merges_in_id_order_across_batches() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(sums(&[("a", 1), ("b", 2)])).unwrap();
        tx.send(sums(&[("bb", 3), ("d", 4)])).unwrap();
        tx.send(SumsMessage::End).unwrap();
        let mut cursor = SumsCursor::new(rx);
        let mut got = Vec::new();
        for id in ["a", "ba", "bb", "c", "d", "e"] {
            got.push(cursor.values_of(id, 1).unwrap().map(|v| v.to_vec()));
        }
        assert_eq!(
            got,
            vec![
                Some(vec![1]),
                None,
                Some(vec![3]),
                None,
                Some(vec![4]),
                None
            ]
        );
    }

    /// A sums read that stops without saying it ended fails the customers' read: the customers
    /// after it must not be judged as if they had no records.
    #[test]
    fn a_sums_read_that_stops_short_fails_the_read_instead_of_giving_zeros() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(sums(&[("a", 1)])).unwrap();
        drop(tx);
        let mut cursor = SumsCursor::new(rx);
        assert_eq!(cursor.values_of("a", 1).unwrap(), Some(&[1][..]));
        assert!(cursor.values_of("b", 1).is_err());
    }
}
