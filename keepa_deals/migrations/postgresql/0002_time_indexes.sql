-- The pipeline's time columns, as ../0002_time_indexes.sql.

CREATE INDEX deals_first_seen_at ON deals (first_seen_at);
CREATE INDEX deals_last_seen_at ON deals (last_seen_at);
CREATE INDEX deals_last_update_at ON deals (last_update_at);
