-- The contact pipeline: channels (live QR codes), customers, who follows them, the corp tags siyu
-- owns, and what happened to relations (churn, handover, transfer failures).

CREATE TABLE channels (
    -- The contact way's `state` (at most 30 characters); echoed in every add through it.
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- JSON arrays: the members who receive its customers, and extra tag names to apply.
    staff TEXT NOT NULL,
    tags TEXT NOT NULL,
    -- JSON {"text": ..., "attachments": [...]}, or NULL for no welcome message.
    welcome TEXT,
    config_id TEXT,
    qr_code TEXT,
    -- api | config | builtin
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE customers (
    external_userid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- 1 WeChat user, 2 WeCom user
    kind BIGINT NOT NULL,
    corp_name TEXT NOT NULL,
    tier TEXT NOT NULL,
    -- the channel of the first add
    channel TEXT NOT NULL,
    first_added_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX customers_name ON customers (name);

-- A member following a customer (WeCom's follow_user).
CREATE TABLE follows (
    userid TEXT NOT NULL,
    external_userid TEXT NOT NULL,
    channel TEXT NOT NULL,
    state TEXT,
    add_way BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    remark TEXT NOT NULL,
    description TEXT NOT NULL,
    -- JSON array of the tag ids WeCom has on this relation
    tag_ids TEXT NOT NULL,
    -- connected | lost (the customer deleted the member) | deleted (the member deleted the
    -- customer) | transferred (handed over to another member)
    status TEXT NOT NULL,
    ended_at BIGINT,
    -- The remark siyu last wrote: a different remark means the member typed one by hand.
    siyu_remark TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (userid, external_userid)
);
CREATE INDEX follows_customer ON follows (external_userid);
CREATE INDEX follows_channel ON follows (channel, status);

-- The corp tags siyu owns: one per channel and one per tier, in siyu's tag groups.
CREATE TABLE siyu_tags (
    -- channel | tier
    kind TEXT NOT NULL,
    -- the channel or tier code
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    group_name TEXT NOT NULL,
    tag_id TEXT,
    group_id TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, code)
);

CREATE TABLE contact_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    external_userid TEXT NOT NULL,
    userid TEXT NOT NULL,
    -- churn | deleted | handover | transfer_fail | tag_removed
    kind TEXT NOT NULL,
    detail TEXT,
    at BIGINT NOT NULL,
    -- churn only: when the member and the operators were told
    notified_at BIGINT
);
CREATE INDEX contact_events_customer ON contact_events (external_userid, id);
