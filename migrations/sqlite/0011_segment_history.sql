-- Each change of a customer's value segment, with the RFM scores that decided it (the console's
-- customer page shows it beside the tier history).
CREATE TABLE segment_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    external_userid TEXT NOT NULL,
    from_segment TEXT,
    to_segment TEXT NOT NULL,
    rfm TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX segment_history_customer ON segment_history (external_userid, id);
