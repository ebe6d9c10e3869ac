-- Campaigns: siyu's media library, and scheduled Moments posts and mass messages, each run and
-- each WeCom task of a run recorded with what came of it.

-- Files operators upload (images, videos, files), kept here and uploaded to WeCom when a
-- campaign needs them (the media_id WeCom gives lives 3 days: see wecom_media).
CREATE TABLE media_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filename TEXT NOT NULL,
    -- image | video | file
    kind TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BLOB NOT NULL,
    created_at BIGINT NOT NULL
);

-- What the operator asked for.
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- moment | message | group_message
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    -- JSON: {tiers, segments, channels, members}
    audience TEXT NOT NULL,
    -- JSON: {text, images, video, link}
    content TEXT NOT NULL,
    -- JSON: {at} or {cron, until}
    schedule TEXT NOT NULL,
    -- the time zone a cron is read in
    timezone TEXT NOT NULL,
    -- scheduled | running | done | cancelled
    status TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX campaigns_status ON campaigns (status);

-- One due time of a campaign: fires once (unique), whatever the replicas and restarts.
CREATE TABLE campaign_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    -- pending | sending | sent | cancelled | failed
    status TEXT NOT NULL,
    -- customers (or groups) in the audience when the run started, and those left out by the cap
    audience BIGINT NOT NULL,
    excluded_cap BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    UNIQUE (campaign_id, due_at)
);

-- One WeCom task of a run: an add_msg_template for one sender's chunk of customers (or groups),
-- or the run's add_moment_task.
CREATE TABLE campaign_sends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BIGINT NOT NULL,
    -- template | group_template | moment
    kind TEXT NOT NULL,
    -- the member who sends ('' for a moment: its senders are its recipients)
    sender TEXT NOT NULL,
    chunk BIGINT NOT NULL,
    -- pending | tasked | sent | unsent | failed | cancelled
    status TEXT NOT NULL,
    msgid TEXT,
    jobid TEXT,
    moment_id TEXT,
    recipients BIGINT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL,
    tasked_at BIGINT,
    reminded_at BIGINT,
    finished_at BIGINT,
    UNIQUE (run_id, kind, sender, chunk)
);
CREATE INDEX campaign_sends_run ON campaign_sends (run_id);

-- Whom a send is for, and what came of it: a customer (message), a group (group_message) or a
-- member (moment: whether they published).
CREATE TABLE campaign_recipients (
    send_id BIGINT NOT NULL,
    target TEXT NOT NULL,
    -- pending | delivered | not_friend | over_cap | unsent | published | cancelled
    status TEXT NOT NULL,
    at BIGINT,
    PRIMARY KEY (send_id, target)
);
