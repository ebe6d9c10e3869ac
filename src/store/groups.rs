//! Tier groups: each tier's customer groups and join way, the customers in them, the invitations
//! siyu sends and the removals it asks for; mass-message receipts (WeCom media uploads are in
//! [`super::media`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use sqlx::AssertSqlSafe;

use super::{Result, Store, Tx, stored, with_pool, with_tx};
use crate::ids::{ChatId, ExternalUserId, UserId};

string_enum! {
    /// Where an invitation stands; `group_invitations.status`.
    InvitationStatus {
        /// Waiting for the member's window to close.
        Queued => "queued",
        /// In a mass-message task the member has yet to confirm.
        Tasked => "tasked",
        /// The member sent it; the customer has it.
        Delivered => "delivered",
        /// WeCom could not send it: the customer is not the member's contact (any more).
        NotFriend => "not_friend",
        /// The customer reached WeCom's mass-message cap: the member was given the QR link.
        OverCap => "over_cap",
        /// The member never confirmed the task.
        Unsent => "unsent",
        /// The customer is in one of the tier's groups.
        Joined => "joined",
        /// No longer wanted (the customer's tier changed again, or they left).
        Cancelled => "cancelled",
    }
}

impl InvitationStatus {
    /// Still on its way to the customer, or with them (a new one is not raised beside it). An
    /// invitation over the cap is open: the member was given the QR code to pass on.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            InvitationStatus::Queued
                | InvitationStatus::Tasked
                | InvitationStatus::Delivered
                | InvitationStatus::OverCap
        )
    }
}

string_enum! {
    /// How a send carries invitations; `group_invite_sends.kind`.
    SendKind {
        /// One add_msg_template from the member to the customers, with the QR code attached.
        Template => "template",
        /// An app message to the member naming the customers and the QR link (over the cap).
        AppMessage => "app_message",
    }
}

string_enum! {
    /// Where a send stands; `group_invite_sends.status`.
    SendStatus {
        Pending => "pending",
        /// The task exists; the member must confirm it.
        Tasked => "tasked",
        Sent => "sent",
        /// The member did not confirm it in time.
        Unsent => "unsent",
        Failed => "failed",
    }
}

string_enum! {
    /// Where a removal request stands; `group_removals.status`.
    RemovalStatus {
        Requested => "requested",
        /// The customer left or was removed.
        Done => "done",
        /// The customer belongs there again (promoted back), or the group is gone.
        Cancelled => "cancelled",
        /// Asked as many times as configured, and still in the group.
        Overdue => "overdue",
    }
}

/// A tier that has customer groups: the operator's settings and the join way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierGroup {
    pub tier: String,
    pub invitation: String,
    pub room_base_name: Option<String>,
    pub auto_create_room: bool,
    pub config_id: Option<String>,
    pub qr_code: Option<String>,
    pub state: String,
    pub configured_at: i64,
    pub updated_at: i64,
}

/// A customer group of a tier, as last read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupChat {
    pub chat_id: ChatId,
    pub tier: String,
    pub name: String,
    pub owner: UserId,
    pub admins: Vec<UserId>,
    pub notice: String,
    pub member_version: String,
    pub members: i64,
    /// `operator` or `overflow`.
    pub origin: String,
    pub in_join_way: bool,
    pub added_at: i64,
    pub read_at: Option<i64>,
    pub dismissed_at: Option<i64>,
}

/// A customer in a tier group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub chat_id: ChatId,
    pub external_userid: ExternalUserId,
    pub joined_at: i64,
    pub join_scene: i64,
    pub state: Option<String>,
    pub left_at: Option<i64>,
    pub quit_scene: Option<i64>,
    pub lost_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub id: i64,
    pub external_userid: ExternalUserId,
    pub tier: String,
    pub userid: UserId,
    pub status: InvitationStatus,
    pub cause: String,
    pub send_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InviteSend {
    pub id: i64,
    pub userid: UserId,
    pub tier: String,
    pub kind: SendKind,
    pub status: SendStatus,
    pub msgid: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub tasked_at: Option<i64>,
    pub reminded_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub id: i64,
    pub chat_id: ChatId,
    pub external_userid: ExternalUserId,
    pub reason: String,
    pub status: RemovalStatus,
    pub asks: i64,
    pub next_ask_at: i64,
    pub requested_at: i64,
    pub done_at: Option<i64>,
}

const TIER_GROUP_COLUMNS: &str = "tier, invitation, room_base_name, auto_create_room, config_id, \
     qr_code, state, configured_at, updated_at";
type TierGroupRow = (
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
);

fn tier_group(r: TierGroupRow) -> TierGroup {
    TierGroup {
        tier: r.0,
        invitation: r.1,
        room_base_name: r.2,
        auto_create_room: r.3 != 0,
        config_id: r.4,
        qr_code: r.5,
        state: r.6,
        configured_at: r.7,
        updated_at: r.8,
    }
}

const CHAT_COLUMNS: &str = "chat_id, tier, name, owner, admins, notice, member_version, members, \
     origin, in_join_way, added_at, read_at, dismissed_at";
type ChatRow = (
    ChatId,
    String,
    String,
    UserId,
    String,
    String,
    String,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

fn chat(r: ChatRow) -> GroupChat {
    GroupChat {
        chat_id: r.0,
        tier: r.1,
        name: r.2,
        owner: r.3,
        admins: r
            .4
            .split(',')
            .filter(|a| !a.is_empty())
            .map(UserId::from)
            .collect(),
        notice: r.5,
        member_version: r.6,
        members: r.7,
        origin: r.8,
        in_join_way: r.9 != 0,
        added_at: r.10,
        read_at: r.11,
        dismissed_at: r.12,
    }
}

const MEMBER_COLUMNS: &str =
    "chat_id, external_userid, joined_at, join_scene, state, left_at, quit_scene, lost_at";
type MemberRow = (
    ChatId,
    ExternalUserId,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn membership(r: MemberRow) -> Membership {
    Membership {
        chat_id: r.0,
        external_userid: r.1,
        joined_at: r.2,
        join_scene: r.3,
        state: r.4,
        left_at: r.5,
        quit_scene: r.6,
        lost_at: r.7,
    }
}

const INVITATION_COLUMNS: &str =
    "id, external_userid, tier, userid, status, cause, send_id, created_at, updated_at";
type InvitationRow = (
    i64,
    ExternalUserId,
    String,
    UserId,
    String,
    String,
    Option<i64>,
    i64,
    i64,
);

fn invitation(r: InvitationRow) -> Result<Invitation> {
    Ok(Invitation {
        id: r.0,
        external_userid: r.1,
        tier: r.2,
        userid: r.3,
        status: stored("group_invitations.status", &r.4, InvitationStatus::parse)?,
        cause: r.5,
        send_id: r.6,
        created_at: r.7,
        updated_at: r.8,
    })
}

const SEND_COLUMNS: &str = "id, userid, tier, kind, status, msgid, error, created_at, tasked_at, \
     reminded_at, finished_at";
type SendRow = (
    i64,
    UserId,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn send(r: SendRow) -> Result<InviteSend> {
    Ok(InviteSend {
        id: r.0,
        userid: r.1,
        tier: r.2,
        kind: stored("group_invite_sends.kind", &r.3, SendKind::parse)?,
        status: stored("group_invite_sends.status", &r.4, SendStatus::parse)?,
        msgid: r.5,
        error: r.6,
        created_at: r.7,
        tasked_at: r.8,
        reminded_at: r.9,
        finished_at: r.10,
    })
}

const REMOVAL_COLUMNS: &str =
    "id, chat_id, external_userid, reason, status, asks, next_ask_at, requested_at, done_at";
type RemovalRow = (
    i64,
    ChatId,
    ExternalUserId,
    String,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
);

/// A removal request's columns and its group's owner.
type RemovalWithOwner = (
    i64,
    ChatId,
    ExternalUserId,
    String,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    UserId,
);

fn removal(r: RemovalRow) -> Result<Removal> {
    Ok(Removal {
        id: r.0,
        chat_id: r.1,
        external_userid: r.2,
        reason: r.3,
        status: stored("group_removals.status", &r.4, RemovalStatus::parse)?,
        asks: r.5,
        next_ask_at: r.6,
        requested_at: r.7,
        done_at: r.8,
    })
}

const OPEN_REMOVAL: &str = "status IN ('requested', 'overdue')";

// ---- in a transaction ----------------------------------------------------------------------

pub async fn upsert_tier_group(tx: &mut Tx, g: &TierGroup) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO tier_groups ({TIER_GROUP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tier) DO UPDATE SET invitation = excluded.invitation,
               room_base_name = excluded.room_base_name, auto_create_room = excluded.auto_create_room,
               config_id = excluded.config_id, qr_code = excluded.qr_code, state = excluded.state,
               updated_at = excluded.updated_at"
        )))
        .bind(&g.tier)
        .bind(&g.invitation)
        .bind(&g.room_base_name)
        .bind(i64::from(g.auto_create_room))
        .bind(&g.config_id)
        .bind(&g.qr_code)
        .bind(&g.state)
        .bind(g.configured_at)
        .bind(g.updated_at)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Forgets a tier's groups: its settings, its groups and who is in them; the tier's queued
/// invitations and its groups' open removal requests are cancelled.
pub async fn delete_tier_group(tx: &mut Tx, tier: &str, at: i64) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE group_invitations SET status = 'cancelled', updated_at = $1 WHERE tier = $2 AND status = 'queued'",
        )
        .bind(at)
        .bind(tier)
        .execute(&mut *conn)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE group_removals SET status = 'cancelled', done_at = $1
             WHERE chat_id IN (SELECT chat_id FROM group_chats WHERE tier = $2) AND {OPEN_REMOVAL}"
        )))
        .bind(at)
        .bind(tier)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM group_members WHERE chat_id IN (SELECT chat_id FROM group_chats WHERE tier = $1)")
            .bind(tier)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM group_chats WHERE tier = $1")
            .bind(tier)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM tier_groups WHERE tier = $1")
            .bind(tier)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Every tier that has groups, with its settings.
pub async fn tier_groups_in(tx: &mut Tx) -> Result<Vec<TierGroup>> {
    let rows: Vec<TierGroupRow> = with_tx!(tx, |conn| {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {TIER_GROUP_COLUMNS} FROM tier_groups ORDER BY tier"
        )))
        .fetch_all(&mut *conn)
        .await?
    });
    Ok(rows.into_iter().map(tier_group).collect())
}

pub async fn upsert_group_chat(tx: &mut Tx, c: &GroupChat) -> Result<()> {
    let admins = c
        .admins
        .iter()
        .map(UserId::as_str)
        .collect::<Vec<_>>()
        .join(",");
    with_tx!(tx, |conn| {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO group_chats ({CHAT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (chat_id) DO UPDATE SET tier = excluded.tier, name = excluded.name,
               owner = excluded.owner, admins = excluded.admins, notice = excluded.notice,
               member_version = excluded.member_version, members = excluded.members,
               origin = excluded.origin, in_join_way = excluded.in_join_way,
               read_at = excluded.read_at, dismissed_at = excluded.dismissed_at"
        )))
        .bind(&c.chat_id)
        .bind(&c.tier)
        .bind(&c.name)
        .bind(&c.owner)
        .bind(&admins)
        .bind(&c.notice)
        .bind(&c.member_version)
        .bind(c.members)
        .bind(&c.origin)
        .bind(i64::from(c.in_join_way))
        .bind(c.added_at)
        .bind(c.read_at)
        .bind(c.dismissed_at)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Marks which of the tier's groups the join way leads to.
pub async fn set_join_way_chats(tx: &mut Tx, tier: &str, chats: &[ChatId]) -> Result<()> {
    let all: Vec<ChatId> = with_tx!(tx, |conn| {
        sqlx::query_scalar("SELECT chat_id FROM group_chats WHERE tier = $1")
            .bind(tier)
            .fetch_all(&mut *conn)
            .await?
    });
    for chat_id in all {
        with_tx!(tx, |conn| {
            sqlx::query("UPDATE group_chats SET in_join_way = $1 WHERE chat_id = $2")
                .bind(i64::from(chats.contains(&chat_id)))
                .bind(&chat_id)
                .execute(&mut *conn)
                .await?;
        });
    }
    Ok(())
}

/// Forgets the groups the operator named for `tier` and no longer names (not in `keep`), and
/// who was in them. Overflow groups stay (they are the tier's until dismissed).
pub async fn drop_chats_of_tier(tx: &mut Tx, tier: &str, keep: &[ChatId]) -> Result<()> {
    let stale: Vec<ChatId> = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT chat_id FROM group_chats WHERE tier = $1 AND origin = 'operator'",
        )
        .bind(tier)
        .fetch_all(&mut *conn)
        .await?
    });
    for chat_id in stale.iter().filter(|c| !keep.contains(c)) {
        with_tx!(tx, |conn| {
            sqlx::query("DELETE FROM group_members WHERE chat_id = $1")
                .bind(chat_id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM group_chats WHERE chat_id = $1")
                .bind(chat_id)
                .execute(&mut *conn)
                .await?;
        });
    }
    Ok(())
}

pub async fn group_chat_in(tx: &mut Tx, chat_id: &ChatId) -> Result<Option<GroupChat>> {
    let row: Option<ChatRow> = with_tx!(tx, |conn| {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {CHAT_COLUMNS} FROM group_chats WHERE chat_id = $1"
        )))
        .bind(chat_id)
        .fetch_optional(&mut *conn)
        .await?
    });
    Ok(row.map(chat))
}

pub async fn record_chat_change(
    tx: &mut Tx,
    chat_id: &ChatId,
    kind: &str,
    detail: &str,
    at: i64,
) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO group_chat_changes (chat_id, kind, detail, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(chat_id)
        .bind(kind)
        .bind(detail)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// Records a customer in a group (a join, or a join again after leaving).
pub async fn upsert_membership(tx: &mut Tx, m: &Membership) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO group_members ({MEMBER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (chat_id, external_userid) DO UPDATE SET joined_at = excluded.joined_at,
               join_scene = excluded.join_scene, state = excluded.state, left_at = excluded.left_at,
               quit_scene = excluded.quit_scene, lost_at = excluded.lost_at"
        )))
        .bind(&m.chat_id)
        .bind(&m.external_userid)
        .bind(m.joined_at)
        .bind(m.join_scene)
        .bind(&m.state)
        .bind(m.left_at)
        .bind(m.quit_scene)
        .bind(m.lost_at)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

pub async fn mark_left(
    tx: &mut Tx,
    chat_id: &ChatId,
    external_userid: &ExternalUserId,
    quit_scene: Option<i64>,
    at: i64,
) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE group_members SET left_at = $1, quit_scene = $2
             WHERE chat_id = $3 AND external_userid = $4 AND left_at IS NULL",
        )
        .bind(at)
        .bind(quit_scene)
        .bind(chat_id)
        .bind(external_userid)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// The group is gone: it leaves its tier, everyone in it has left, its open requests are moot.
pub async fn dismiss_chat(tx: &mut Tx, chat_id: &ChatId, at: i64) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query("UPDATE group_chats SET dismissed_at = $1, in_join_way = 0 WHERE chat_id = $2")
            .bind(at)
            .bind(chat_id)
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE group_members SET left_at = $1 WHERE chat_id = $2 AND left_at IS NULL")
            .bind(at)
            .bind(chat_id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE group_removals SET status = 'cancelled', done_at = $1 WHERE chat_id = $2 AND {OPEN_REMOVAL}"
        )))
        .bind(at)
        .bind(chat_id)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// The live tier groups a customer is in: `(chat, tier)`.
pub async fn chats_of_customer(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
) -> Result<Vec<(ChatId, String)>> {
    let rows = with_tx!(tx, |conn| {
        sqlx::query_as(
            "SELECT m.chat_id, c.tier FROM group_members m JOIN group_chats c ON c.chat_id = m.chat_id
             WHERE m.external_userid = $1 AND m.left_at IS NULL AND c.dismissed_at IS NULL
             ORDER BY m.chat_id",
        )
        .bind(external_userid)
        .fetch_all(&mut *conn)
        .await?
    });
    Ok(rows)
}

/// The customer deleted every member: their memberships stay, marked lost.
pub async fn mark_memberships_lost(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    at: i64,
) -> Result<u64> {
    let n = with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE group_members SET lost_at = $1 WHERE external_userid = $2 AND lost_at IS NULL",
        )
        .bind(at)
        .bind(external_userid)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    Ok(n)
}

/// The customer's tier in `tx` (None: not a known customer).
pub async fn tier_of(tx: &mut Tx, external_userid: &ExternalUserId) -> Result<Option<String>> {
    let tier = with_tx!(tx, |conn| {
        sqlx::query_scalar("SELECT tier FROM customers WHERE external_userid = $1")
            .bind(external_userid)
            .fetch_optional(&mut *conn)
            .await?
    });
    Ok(tier)
}

/// How many members follow the customer now.
pub async fn connected_follows(tx: &mut Tx, external_userid: &ExternalUserId) -> Result<i64> {
    let n: i64 = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM follows WHERE external_userid = $1 AND status = 'connected'",
        )
        .bind(external_userid)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(n)
}

pub struct NewInvitation<'a> {
    pub external_userid: &'a ExternalUserId,
    pub tier: &'a str,
    pub userid: &'a UserId,
    pub cause: &'a str,
    pub at: i64,
}

/// Queues an invitation; false when its cause raised one before.
pub async fn insert_invitation(tx: &mut Tx, i: &NewInvitation<'_>) -> Result<bool> {
    let n = with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO group_invitations (external_userid, tier, userid, status, cause, created_at, updated_at)
             VALUES ($1, $2, $3, 'queued', $4, $5, $5) ON CONFLICT (cause) DO NOTHING",
        )
        .bind(i.external_userid)
        .bind(i.tier)
        .bind(i.userid)
        .bind(i.cause)
        .bind(i.at)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Whether the customer has an invitation to `tier` still on its way.
pub async fn open_invitation_exists(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    tier: &str,
) -> Result<bool> {
    let n: i64 = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM group_invitations WHERE external_userid = $1 AND tier = $2
             AND status IN ('queued', 'tasked', 'delivered', 'over_cap')",
        )
        .bind(external_userid)
        .bind(tier)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(n > 0)
}

/// Whether the customer was ever invited to `tier`. An invitation cancelled before it was sent
/// (the customer's member deleted them, their tier moved on) does not count: they never had it.
pub async fn invited_ever(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    tier: &str,
) -> Result<bool> {
    let n: i64 = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM group_invitations
             WHERE external_userid = $1 AND tier = $2 AND status <> 'cancelled'",
        )
        .bind(external_userid)
        .bind(tier)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(n > 0)
}

/// Cancels the customer's invitations not yet sent, except those to `keep` (if any).
pub async fn cancel_queued_invitations(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    keep: Option<&str>,
    at: i64,
) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE group_invitations SET status = 'cancelled', updated_at = $1
             WHERE external_userid = $2 AND status = 'queued' AND ($3 IS NULL OR tier <> $3)",
        )
        .bind(at)
        .bind(external_userid)
        .bind(keep)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

/// The customer is in a group of `tier`: their invitations to it are `joined`.
pub async fn mark_invitations_joined(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    tier: &str,
    at: i64,
) -> Result<u64> {
    let n = with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE group_invitations SET status = 'joined', updated_at = $1
             WHERE external_userid = $2 AND tier = $3 AND status NOT IN ('joined', 'cancelled')",
        )
        .bind(at)
        .bind(external_userid)
        .bind(tier)
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    Ok(n)
}

/// Sets the status (and the send) of invitations.
pub async fn set_invitations(
    tx: &mut Tx,
    ids: &[i64],
    status: InvitationStatus,
    send_id: Option<i64>,
    at: i64,
) -> Result<()> {
    for chunk in ids.chunks(500) {
        with_tx!(tx, |conn| {
            let mut q = sqlx::QueryBuilder::new("UPDATE group_invitations SET status = ");
            q.push_bind(status.as_str());
            q.push(", updated_at = ");
            q.push_bind(at);
            if let Some(send_id) = send_id {
                q.push(", send_id = ");
                q.push_bind(send_id);
            }
            q.push(" WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *conn).await?;
        });
    }
    Ok(())
}

pub async fn insert_send(
    tx: &mut Tx,
    userid: &UserId,
    tier: &str,
    kind: SendKind,
    at: i64,
) -> Result<i64> {
    let id = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "INSERT INTO group_invite_sends (userid, tier, kind, status, created_at)
             VALUES ($1, $2, $3, 'pending', $4) RETURNING id",
        )
        .bind(userid)
        .bind(tier)
        .bind(kind.as_str())
        .bind(at)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(id)
}

pub async fn save_send(tx: &mut Tx, s: &InviteSend) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE group_invite_sends SET status = $1, msgid = $2, error = $3, tasked_at = $4,
               reminded_at = $5, finished_at = $6 WHERE id = $7",
        )
        .bind(s.status.as_str())
        .bind(&s.msgid)
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

/// Opens a removal request; None when one is open for the customer and group already.
pub async fn insert_removal(
    tx: &mut Tx,
    chat_id: &ChatId,
    external_userid: &ExternalUserId,
    reason: &str,
    at: i64,
) -> Result<Option<i64>> {
    let id = with_tx!(tx, |conn| {
        sqlx::query_scalar(
            "INSERT INTO group_removals (chat_id, external_userid, reason, status, asks, next_ask_at, requested_at)
             VALUES ($1, $2, $3, 'requested', 0, $4, $4) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(chat_id)
        .bind(external_userid)
        .bind(reason)
        .bind(at)
        .fetch_optional(&mut *conn)
        .await?
    });
    Ok(id)
}

/// Closes the open removal requests of a customer in the given groups as `status`.
pub async fn close_removals(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    chats: &[ChatId],
    status: RemovalStatus,
    at: i64,
) -> Result<u64> {
    let mut n = 0;
    for chat_id in chats {
        n += with_tx!(tx, |conn| {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE group_removals SET status = $1, done_at = $2
                 WHERE external_userid = $3 AND chat_id = $4 AND {OPEN_REMOVAL}"
            )))
            .bind(status.as_str())
            .bind(at)
            .bind(external_userid)
            .bind(chat_id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
    }
    Ok(n)
}

/// The owner was asked: once more, and next time at `next_ask_at`.
pub async fn mark_asked(tx: &mut Tx, ids: &[i64], next_ask_at: i64) -> Result<()> {
    for id in ids {
        with_tx!(tx, |conn| {
            sqlx::query(
                "UPDATE group_removals SET asks = asks + 1, next_ask_at = $1 WHERE id = $2 AND status = 'requested'",
            )
            .bind(next_ask_at)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        });
    }
    Ok(())
}

pub async fn mark_overdue(tx: &mut Tx, ids: &[i64]) -> Result<()> {
    for id in ids {
        with_tx!(tx, |conn| {
            sqlx::query("UPDATE group_removals SET status = 'overdue' WHERE id = $1 AND status = 'requested'")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        });
    }
    Ok(())
}

pub async fn record_receipt(
    tx: &mut Tx,
    external_userid: &ExternalUserId,
    msgid: &str,
    at: i64,
) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO mass_receipts (external_userid, msgid, at) VALUES ($1, $2, $3)
             ON CONFLICT (external_userid, msgid) DO NOTHING",
        )
        .bind(external_userid)
        .bind(msgid)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    });
    Ok(())
}

// ---- reads ---------------------------------------------------------------------------------

/// What `GET /metrics` counts of tier groups.
#[derive(Debug, Clone, Default)]
pub struct GroupCounts {
    pub invitations: Vec<(String, i64)>,
    pub removals: Vec<(String, i64)>,
    /// Customers who joined a tier group (every membership recorded).
    pub joins: i64,
    pub members_now: i64,
}

impl Store {
    pub async fn tier_groups(&self) -> Result<Vec<TierGroup>> {
        let rows: Vec<TierGroupRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {TIER_GROUP_COLUMNS} FROM tier_groups ORDER BY tier"
            )))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(tier_group).collect())
    }

    pub async fn tier_group(&self, tier: &str) -> Result<Option<TierGroup>> {
        let row: Option<TierGroupRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {TIER_GROUP_COLUMNS} FROM tier_groups WHERE tier = $1"
            )))
            .bind(tier)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(tier_group))
    }

    /// The live groups of `tier` (every tier's with None), newest last.
    pub async fn group_chats(&self, tier: Option<&str>) -> Result<Vec<GroupChat>> {
        let rows: Vec<ChatRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {CHAT_COLUMNS} FROM group_chats WHERE dismissed_at IS NULL
                 AND ($1 IS NULL OR tier = $1) ORDER BY tier, added_at, chat_id"
            )))
            .bind(tier)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(chat).collect())
    }

    /// A group siyu knows (dismissed ones too).
    pub async fn group_chat(&self, chat_id: &ChatId) -> Result<Option<GroupChat>> {
        let row: Option<ChatRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {CHAT_COLUMNS} FROM group_chats WHERE chat_id = $1"
            )))
            .bind(chat_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(chat))
    }

    /// The customers in the live groups of `tier` now.
    pub async fn members_of_tier(&self, tier: &str) -> Result<Vec<Membership>> {
        let rows: Vec<MemberRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {} FROM group_members m JOIN group_chats c ON c.chat_id = m.chat_id
                 WHERE c.tier = $1 AND c.dismissed_at IS NULL AND m.left_at IS NULL
                 ORDER BY m.external_userid, m.chat_id",
                prefixed("m", MEMBER_COLUMNS)
            )))
            .bind(tier)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(membership).collect())
    }

    /// The customers in a group now.
    pub async fn members_of_chat(&self, chat_id: &ChatId) -> Result<Vec<Membership>> {
        let rows: Vec<MemberRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {MEMBER_COLUMNS} FROM group_members WHERE chat_id = $1 AND left_at IS NULL"
            )))
            .bind(chat_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(membership).collect())
    }

    /// The tier of each of `ids` that is a known customer.
    pub async fn tiers_of(
        &self,
        ids: &[ExternalUserId],
    ) -> Result<HashMap<ExternalUserId, String>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let rows: Vec<(ExternalUserId, String)> = with_pool!(self, |pool| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT external_userid, tier FROM customers WHERE external_userid IN (",
                );
                let mut sep = q.separated(", ");
                for id in chunk {
                    sep.push_bind(id);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Every membership of a customer, past ones too.
    pub async fn memberships_of(
        &self,
        external_userid: &ExternalUserId,
    ) -> Result<Vec<Membership>> {
        let rows: Vec<MemberRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {MEMBER_COLUMNS} FROM group_members WHERE external_userid = $1 ORDER BY joined_at"
            )))
            .bind(external_userid)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(membership).collect())
    }

    /// A member's queued invitations not yet given to a send.
    pub async fn queued_invitations_of(&self, userid: &UserId) -> Result<Vec<Invitation>> {
        self.invitations_where(
            "userid = $1 AND status = 'queued' AND send_id IS NULL",
            userid.as_str(),
        )
        .await
    }

    pub async fn invitations_of_send(&self, send_id: i64) -> Result<Vec<Invitation>> {
        let rows: Vec<InvitationRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {INVITATION_COLUMNS} FROM group_invitations WHERE send_id = $1 ORDER BY id"
            )))
            .bind(send_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(invitation).collect()
    }

    pub async fn invitations_of_customer(
        &self,
        external_userid: &ExternalUserId,
    ) -> Result<Vec<Invitation>> {
        self.invitations_where("external_userid = $1", external_userid.as_str())
            .await
    }

    /// The latest invitation of each customer to `tier`.
    pub async fn latest_invitations_to(
        &self,
        tier: &str,
    ) -> Result<HashMap<ExternalUserId, Invitation>> {
        let all = self.invitations_where("tier = $1", tier).await?;
        let mut latest = HashMap::new();
        for i in all {
            latest.insert(i.external_userid.clone(), i);
        }
        Ok(latest)
    }

    async fn invitations_where(&self, condition: &str, value: &str) -> Result<Vec<Invitation>> {
        let rows: Vec<InvitationRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {INVITATION_COLUMNS} FROM group_invitations WHERE {condition} ORDER BY id"
            )))
            .bind(value)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(invitation).collect()
    }

    pub async fn invite_send(&self, id: i64) -> Result<Option<InviteSend>> {
        let row: Option<SendRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {SEND_COLUMNS} FROM group_invite_sends WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(send).transpose()
    }

    /// The open removal requests of groups owned by `owner` that are due to be asked.
    pub async fn due_removals_of_owner(&self, owner: &UserId, now: i64) -> Result<Vec<Removal>> {
        let rows: Vec<RemovalRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {} FROM group_removals r JOIN group_chats c ON c.chat_id = r.chat_id
                 WHERE c.owner = $1 AND c.dismissed_at IS NULL AND r.status = 'requested'
                 AND r.next_ask_at <= $2 ORDER BY r.chat_id, r.id",
                prefixed("r", REMOVAL_COLUMNS)
            )))
            .bind(owner)
            .bind(now)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(removal).collect()
    }

    pub async fn removal(&self, id: i64) -> Result<Option<Removal>> {
        let row: Option<RemovalRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {REMOVAL_COLUMNS} FROM group_removals WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(removal).transpose()
    }

    /// Requests due to be asked again, with their group's owner.
    pub async fn due_removals(&self, now: i64) -> Result<Vec<(Removal, UserId)>> {
        let rows: Vec<RemovalWithOwner> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT {}, c.owner FROM group_removals r JOIN group_chats c ON c.chat_id = r.chat_id
                     WHERE r.status = 'requested' AND r.next_ask_at <= $1 ORDER BY r.id",
                    prefixed("r", REMOVAL_COLUMNS)
                )))
                .bind(now)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|r| {
                let owner = r.9.clone();
                Ok((
                    removal((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8))?,
                    owner,
                ))
            })
            .collect()
    }

    /// Open removal requests (requested or overdue) of a customer, or of a tier's groups.
    pub async fn open_removals(
        &self,
        external_userid: Option<&ExternalUserId>,
        tier: Option<&str>,
    ) -> Result<Vec<Removal>> {
        let rows: Vec<RemovalRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {} FROM group_removals r JOIN group_chats c ON c.chat_id = r.chat_id
                 WHERE r.{OPEN_REMOVAL} AND ($1 IS NULL OR r.external_userid = $1)
                 AND ($2 IS NULL OR c.tier = $2) ORDER BY r.id",
                prefixed("r", REMOVAL_COLUMNS)
            )))
            .bind(external_userid)
            .bind(tier)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(removal).collect()
    }

    pub async fn removals_of_customer(
        &self,
        external_userid: &ExternalUserId,
    ) -> Result<Vec<Removal>> {
        let rows: Vec<RemovalRow> = with_pool!(self, |pool| {
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {REMOVAL_COLUMNS} FROM group_removals WHERE external_userid = $1 ORDER BY id"
            )))
            .bind(external_userid)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(removal).collect()
    }

    /// The customers of `tier` and their names, in id order.
    pub async fn customers_of_tier(&self, tier: &str) -> Result<Vec<(ExternalUserId, String)>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as("SELECT external_userid, name FROM customers WHERE tier = $1 ORDER BY external_userid")
                .bind(tier)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// When each customer of `tier` last entered it (their first add, if they never changed).
    pub async fn tier_since(&self, tier: &str) -> Result<HashMap<ExternalUserId, i64>> {
        let rows: Vec<(ExternalUserId, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT c.external_userid, COALESCE(MAX(h.at), c.first_added_at) FROM customers c
                 LEFT JOIN tier_history h ON h.external_userid = c.external_userid AND h.to_tier = c.tier
                 WHERE c.tier = $1 GROUP BY c.external_userid, c.first_added_at",
            )
            .bind(tier)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().collect())
    }

    /// How many mass messages each of `customers` received since `since`.
    pub async fn receipts_since(
        &self,
        customers: &[ExternalUserId],
        since: i64,
    ) -> Result<HashMap<ExternalUserId, i64>> {
        let mut out = HashMap::new();
        for chunk in customers.chunks(500) {
            let rows: Vec<(ExternalUserId, i64)> = with_pool!(self, |pool| {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT external_userid, COUNT(*) FROM mass_receipts WHERE at >= ",
                );
                q.push_bind(since);
                q.push(" AND external_userid IN (");
                let mut sep = q.separated(", ");
                for c in chunk {
                    sep.push_bind(c);
                }
                q.push(") GROUP BY external_userid");
                q.build_query_as().fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    pub async fn group_counts(&self) -> Result<GroupCounts> {
        with_pool!(self, |pool| {
            let invitations: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, COUNT(*) FROM group_invitations GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await?;
            let removals: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, COUNT(*) FROM group_removals GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await?;
            let joins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM group_members")
                .fetch_one(pool)
                .await?;
            let members_now: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM group_members WHERE left_at IS NULL")
                    .fetch_one(pool)
                    .await?;
            Ok(GroupCounts {
                invitations,
                removals,
                joins,
                members_now,
            })
        })
    }
}

/// `a, b` → `p.a, p.b`.
fn prefixed(prefix: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{prefix}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
