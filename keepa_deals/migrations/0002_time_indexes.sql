-- The pipeline's time columns: "deals added since" and the newest deal (first_seen_at), the
-- janitor's stale deals (last_seen_at), freshness (last_update_at). Their values grow with time,
-- so new entries land at the end of each index and cost writes little.

CREATE INDEX IF NOT EXISTS deals_first_seen_at ON deals (first_seen_at);
CREATE INDEX IF NOT EXISTS deals_last_seen_at ON deals (last_seen_at);
CREATE INDEX IF NOT EXISTS deals_last_update_at ON deals (last_update_at);
