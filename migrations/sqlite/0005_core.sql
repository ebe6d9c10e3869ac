-- A send job's ledger: what its handler recorded before it called WeCom (the exact body it
-- sent, and what it learnt of the outcome), so a retry looks before it sends again and sends
-- byte for byte the same thing.
ALTER TABLE jobs ADD COLUMN ledger TEXT;
