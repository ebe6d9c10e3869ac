-- Every change made through the API (and by `siyu users`): who, when, what, before and after.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    -- the user's name, `api.token`, or `cli`
    who TEXT NOT NULL,
    role TEXT NOT NULL,
    -- api | cli
    via TEXT NOT NULL,
    -- e.g. `PUT /api/v1/channels/douyin`
    what TEXT NOT NULL,
    -- the HTTP status of the answer (0 from the command line)
    status BIGINT NOT NULL,
    -- JSON: what was asked, the resource before and after (NULL when there is none)
    request TEXT,
    before TEXT,
    after TEXT
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_who ON audit (who, at);
