-- The console's sign-ins: a session per browser (its cookie's secret kept as SHA-256, with the
-- CSRF token its forms carry), and the failed sign-ins per user name (slowed and counted).

CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);

CREATE TABLE sign_in_failures (
    -- the name as typed (lowercased), whether or not such a user exists
    name TEXT PRIMARY KEY,
    -- in a row since the last sign-in that worked
    failures BIGINT NOT NULL,
    -- ever
    total BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
