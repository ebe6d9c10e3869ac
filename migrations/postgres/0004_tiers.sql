-- Tiers: activity from the shop, the shop's own customer ids, and every tier change with why.

-- One row per activity record, unique by the shop's record id (a batch sent twice changes nothing).
CREATE TABLE activity (
    id TEXT PRIMARY KEY,
    -- an external_userid, or the shop's customer id (mapped through customer_refs)
    customer TEXT NOT NULL,
    -- whom it counts for: the external_userid `customer` maps to, else `customer` itself
    -- (re-keyed when a mapping arrives), so evaluation groups by one indexed column
    who TEXT NOT NULL,
    -- order | refund | referral | any custom kind
    kind TEXT NOT NULL,
    -- in fen (1/100 yuan): exact, no floating point
    amount_fen BIGINT NOT NULL,
    count BIGINT NOT NULL,
    at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
-- Covering, in evaluation order: the full evaluation is one ordered pass over this index.
CREATE INDEX activity_who ON activity (who, kind, at, amount_fen, count);
CREATE INDEX activity_customer ON activity (customer);

CREATE TABLE customer_refs (
    ref TEXT PRIMARY KEY,
    external_userid TEXT NOT NULL
);
CREATE INDEX customer_refs_customer ON customer_refs (external_userid);

-- Since when the customer has failed their tier's keep rules (NULL: they meet them).
ALTER TABLE customers ADD COLUMN keep_failing_since BIGINT;
-- The value segment (RFM) and its scores, e.g. 重要价值 and R5F4M5; NULL until evaluated.
ALTER TABLE customers ADD COLUMN segment TEXT;
ALTER TABLE customers ADD COLUMN rfm TEXT;

CREATE TABLE tier_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_userid TEXT NOT NULL,
    from_tier TEXT NOT NULL,
    to_tier TEXT NOT NULL,
    -- the rule and the metric values behind the change
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX tier_history_customer ON tier_history (external_userid, id);
CREATE INDEX tier_history_at ON tier_history (at);

-- An operator's pin: the customer stays in `tier` whatever the rules say, until `expires_at`
-- (NULL: until unpinned).
CREATE TABLE tier_pins (
    external_userid TEXT PRIMARY KEY,
    tier TEXT NOT NULL,
    reason TEXT NOT NULL,
    pinned_by TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL
);

-- Tier rules changed through the API (the latest is in force; none: the config's), with who.
CREATE TABLE tier_rules (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rules TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    at BIGINT NOT NULL
);
