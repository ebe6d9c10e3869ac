-- The spine: the callback inbox, the job queue and recurring schedules.
-- Times are Unix milliseconds.

-- Every callback WeCom delivered, once. `dedupe_key` is the MsgId when the event has one,
-- else the SHA-256 of the decrypted XML (see wecom/callback.md section 4).
CREATE TABLE inbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    msg_id TEXT,
    xml TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    -- pending | processing | done | unhandled | failed
    status TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT,
    error TEXT,
    processed_at BIGINT,
    duplicates BIGINT NOT NULL DEFAULT 0
);
-- Partial indexes: only the few open events are in them, so they stay small and hot however
-- many handled events the inbox keeps.
CREATE INDEX inbox_pending ON inbox (id) WHERE status = 'pending';
CREATE INDEX inbox_leased ON inbox (lease_until) WHERE status = 'processing';

CREATE TABLE jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    -- queued | running | done | failed
    state TEXT NOT NULL DEFAULT 'queued',
    -- Higher runs first among due jobs (a welcome message has 20 seconds; a note can wait).
    priority BIGINT NOT NULL DEFAULT 0,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    lease_until BIGINT,
    worker TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_queued ON jobs (priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';

CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    job_kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    next_run_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
