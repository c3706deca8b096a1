-- Change-driven enrichment (DESIGN principle 10): /product tokens go only where something
-- changed. enriched_update_at is the deal's lastUpdate when its /product data were fetched, so
-- "lastUpdate moved since enrichment" is enriched_update_at < last_update_at. Existing
-- enrichments count as current. Two indexes serve the enrichment queue's tiers without a table
-- scan (new and stale: enriched_at; changed: a partial index). freshness_samples holds the lag
-- of each new or changed deal when it was written (dashboard and health report, last hour).

ALTER TABLE deals ADD COLUMN enriched_update_at INTEGER;
UPDATE deals SET enriched_update_at = last_update_at WHERE enriched_at IS NOT NULL;

CREATE INDEX IF NOT EXISTS deals_changed_since_enrichment ON deals (enriched_at)
    WHERE enriched_update_at < last_update_at;
CREATE INDEX IF NOT EXISTS deals_enriched_at ON deals (enriched_at);

CREATE TABLE IF NOT EXISTS freshness_samples (
    id INTEGER PRIMARY KEY,
    recorded_at INTEGER NOT NULL,   -- unix seconds (this machine) when the row was written
    kind TEXT NOT NULL,             -- new | changed
    lag_s INTEGER NOT NULL          -- server time of the write minus creationDate / lastUpdate
);
CREATE INDEX IF NOT EXISTS freshness_samples_kind_recorded_at
    ON freshness_samples (kind, recorded_at);
