-- Tier groups: each tier's customer groups and join way, who is in them, and what siyu asked.

-- A tier that has customer groups: the operator's settings and the join way siyu keeps for it.
CREATE TABLE tier_groups (
    tier TEXT PRIMARY KEY,
    -- the invitation's text, a template (minijinja)
    invitation TEXT NOT NULL,
    room_base_name TEXT,
    auto_create_room BIGINT NOT NULL,
    -- the 「加入群聊」 join way (NULL until WeCom made it) and its QR code
    config_id TEXT,
    qr_code TEXT,
    -- the join way's state: names the tier (≤ 30 characters)
    state TEXT NOT NULL,
    configured_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A customer group of a tier, as last read from WeCom.
CREATE TABLE group_chats (
    chat_id TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    -- the group's admins' userids, comma-separated
    admins TEXT NOT NULL,
    notice TEXT NOT NULL,
    -- groupchat/get's member_version ('' until read): an event naming it needs no read
    member_version TEXT NOT NULL,
    -- members of every kind, owner included (full at groups.room_capacity)
    members BIGINT NOT NULL,
    -- operator: named in the tier's settings; overflow: made by WeCom when the others were full
    origin TEXT NOT NULL,
    -- one of the (at most 5) groups the join way leads to
    in_join_way BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    read_at BIGINT,
    -- the owner dismissed it: kept for its history, no longer the tier's
    dismissed_at BIGINT
);
CREATE INDEX group_chats_tier ON group_chats (tier);

-- What happened to a group besides members (renamed, new notice, new owner, dismissed).
CREATE TABLE group_chat_changes (
    chat_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX group_chat_changes_chat ON group_chat_changes (chat_id, at);

-- A customer in a tier group (external members only), from WeCom's member list.
CREATE TABLE group_members (
    chat_id TEXT NOT NULL,
    external_userid TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    -- groupchat/get's join_scene: 1 invited directly, 2 by link, 3 scanned the group QR code
    join_scene BIGINT NOT NULL,
    -- the join way's state they came through, if any
    state TEXT,
    -- NULL while in the group; quit_scene 0 left by themselves, 1 removed (NULL: dismissed)
    left_at BIGINT,
    quit_scene BIGINT,
    -- the customer deleted every member: the record is kept, marked lost
    lost_at BIGINT,
    PRIMARY KEY (chat_id, external_userid)
);
CREATE INDEX group_members_customer ON group_members (external_userid);

-- An invitation of one customer into their tier's group, sent by the member who follows them.
CREATE TABLE group_invitations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    external_userid TEXT NOT NULL,
    tier TEXT NOT NULL,
    userid TEXT NOT NULL,
    -- queued | tasked | delivered | not_friend | over_cap | unsent | joined | cancelled
    status TEXT NOT NULL,
    -- what raised it (promotion:<change>, entry:<event>, reconcile:<day>): one invitation each
    cause TEXT NOT NULL UNIQUE,
    -- the send that carries it
    send_id BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX group_invitations_customer ON group_invitations (external_userid, tier);
CREATE INDEX group_invitations_member ON group_invitations (userid, status);

-- One add_msg_template (or, for customers over WeCom's cap, one app message to the member)
-- carrying a member's invitations to one tier.
CREATE TABLE group_invite_sends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    userid TEXT NOT NULL,
    tier TEXT NOT NULL,
    -- template | app_message
    kind TEXT NOT NULL,
    -- pending | tasked (the member must confirm) | sent | unsent | failed
    status TEXT NOT NULL,
    msgid TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    tasked_at BIGINT,
    reminded_at BIGINT,
    finished_at BIGINT
);

-- A request to a group's owner to remove a customer who no longer belongs there.
CREATE TABLE group_removals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id TEXT NOT NULL,
    external_userid TEXT NOT NULL,
    -- what the owner reads: the tier and the date
    reason TEXT NOT NULL,
    -- requested | done | cancelled | overdue
    status TEXT NOT NULL,
    -- how many times the owner was asked, and when next
    asks BIGINT NOT NULL,
    next_ask_at BIGINT NOT NULL,
    requested_at BIGINT NOT NULL,
    done_at BIGINT
);
-- At most one open request per customer and group.
CREATE UNIQUE INDEX group_removals_open ON group_removals (chat_id, external_userid)
    WHERE status IN ('requested', 'overdue');
CREATE INDEX group_removals_due ON group_removals (status, next_ask_at);

-- Files uploaded to WeCom (a media_id lives 3 days), by what was uploaded and to which API.
CREATE TABLE wecom_media (
    source TEXT NOT NULL,
    api TEXT NOT NULL,
    media_id TEXT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (source, api)
);

-- Mass messages a customer received (send_result status 1), against WeCom's per-customer cap.
CREATE TABLE mass_receipts (
    external_userid TEXT NOT NULL,
    msgid TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (external_userid, msgid)
);
CREATE INDEX mass_receipts_at ON mass_receipts (external_userid, at);
