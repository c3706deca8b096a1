-- The dashboard at 1 000 000 deals, as ../0005_dashboard_at_scale.sql.
--
-- Title search: one GIN index over the category and the title's trigrams (pg_trgm), the
-- title in the C collation of the dashboard's `title COLLATE "C" ILIKE '%…%'`
-- (case-insensitive for ASCII letters, as SQLite's LIKE). A search of 3 or more characters
-- reads only candidate rows; with a category too (the common pair), GIN intersects both
-- inside the one index scan, where two indexes would leave PostgreSQL filtering ~80 000
-- rows of a broad word to find 10 000 in one category. It also serves the title alone.
-- pg_trgm and btree_gin ship with PostgreSQL (postgresql-contrib) and are trusted
-- extensions: the database owner may create them.
--
-- Sorting: 0002's first-seen and updated indexes become (column, asin) as 0003's. No index
-- for DESC NULLS LAST is needed: the dashboard walks the deals with a value and those without
-- as two ranges of these indexes, each in either direction.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE INDEX deals_category_title_trgm ON deals
    USING gin (category_name, title COLLATE "C" gin_trgm_ops);

DROP INDEX deals_first_seen_at;
CREATE INDEX deals_first_seen_at_asin ON deals (first_seen_at, asin);
DROP INDEX deals_last_update_at;
CREATE INDEX deals_last_update_at_asin ON deals (last_update_at, asin);
