-- WeCom access tokens shared by the replicas, so they don't each fetch their own (and invalidate
-- each other's). Keyed by a hash of corp id and secret, never by the secret itself.
CREATE TABLE wecom_tokens (
    credential TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
