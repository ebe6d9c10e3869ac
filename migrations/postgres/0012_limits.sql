-- WeCom counts its limits per corp, and every replica calls WeCom for the same corp: the pace and
-- hourly budget of each API path, the pause after a 45009 and the per-member app-message caps are
-- kept here, where all replicas see them (SQLite has one process and keeps them in memory).
-- Times are the database's clock in microseconds (siyu_now_us), one clock for every replica and
-- fine enough for WeCom's pace (9000 a minute is one call every 6667 us).

CREATE FUNCTION siyu_now_us() RETURNS BIGINT
    LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT $$;

-- One row per API path, updated at every call: the room left on each page (fillfactor) keeps
-- those updates in place (HOT), so the hot rows do not bloat the table between vacuums.
CREATE TABLE api_pace (
    path TEXT PRIMARY KEY,
    -- The earliest time the next call of this path may start, corp-wide.
    next_free_us BIGINT NOT NULL,
    -- After WeCom answered 45009: no call of this path starts before this.
    blocked_until_us BIGINT NOT NULL DEFAULT 0,
    -- The hourly budget left as of refilled_us (a token bucket); NULL without a budget.
    tokens DOUBLE PRECISION,
    refilled_us BIGINT NOT NULL
) WITH (fillfactor = 50);

-- Takes the next corp-wide slot of a path, if it starts within p_horizon_us from now and the
-- hourly budget holds p_need (callers ask for its reserve plus one, or one when urgent): one
-- statement, the row locked only while it runs. Answers whether the slot was taken, how long
-- until it starts (taken: wait that long, then call; not taken: ask again then), what is left of
-- a 45009 pause, and how long the budget alone would keep the caller waiting. After an idle spell
-- it catches up by one slot at most, as the in-process pace does.
-- It commits without waiting for the WAL flush: the row stays locked until the commit, so waiting
-- would hold a path's corp-wide pace to the disk's flush rate (7.8 ms a call measured on the test
-- machine, below the 6.7 ms that 9000 a minute needs; 0.3 ms without). The ledger is soft state:
-- a database crash that loses its last updates lets a path catch up a slot, or forget a pause and
-- meet the next 45009.
CREATE FUNCTION siyu_take_api_slot(
    p_path TEXT,
    p_interval_us BIGINT,
    p_horizon_us BIGINT,
    p_capacity DOUBLE PRECISION,
    p_per_us DOUBLE PRECISION,
    p_need DOUBLE PRECISION,
    OUT taken BOOLEAN,
    OUT wait_us BIGINT,
    OUT paused_us BIGINT,
    OUT short_us BIGINT
) LANGUAGE plpgsql AS $$
DECLARE
    now_us BIGINT := siyu_now_us();
    cur api_pace%ROWTYPE;
    left_tokens DOUBLE PRECISION;
    start_us BIGINT;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO api_pace (path, next_free_us, tokens, refilled_us)
    VALUES (p_path, now_us, p_capacity, now_us)
    ON CONFLICT (path) DO NOTHING;
    SELECT * INTO cur FROM api_pace WHERE path = p_path FOR UPDATE;
    start_us := GREATEST(cur.next_free_us, cur.blocked_until_us, now_us - p_interval_us);
    short_us := 0;
    IF p_capacity IS NOT NULL THEN
        left_tokens := LEAST(p_capacity,
            COALESCE(cur.tokens, p_capacity) + (now_us - cur.refilled_us) * p_per_us);
        IF left_tokens < p_need THEN
            short_us := ceil((p_need - left_tokens) / p_per_us)::BIGINT;
            start_us := GREATEST(start_us, now_us + short_us);
        END IF;
    END IF;
    taken := start_us <= now_us + p_horizon_us;
    IF taken THEN
        UPDATE api_pace
        SET next_free_us = start_us + p_interval_us,
            tokens = left_tokens - 1,
            refilled_us = now_us
        WHERE path = p_path;
    END IF;
    wait_us := GREATEST(start_us - now_us, 0);
    paused_us := GREATEST(cur.blocked_until_us - now_us, 0);
END
$$;

-- Every app message (message/send) to a member in the last hour, whichever replica sent it: the
-- caps are 30 a minute and 1000 an hour per member, over any minute and any hour (excess is
-- dropped silently by WeCom). Pruned hourly once older than an hour.
CREATE TABLE app_message_ledger (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    member TEXT NOT NULL,
    sent_at_us BIGINT NOT NULL
);
CREATE INDEX app_message_ledger_member ON app_message_ledger (member, sent_at_us);
