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

-- Counts without counting: PostgreSQL's COUNT(*) reads every row version (about 100 ms on
-- 1 000 000 deals), and the overview asks for the deal count, the deals first seen in the
-- last day and the enriched ones on every refresh. deal_hours keeps, per hour, how many deals
-- were first seen (kind first_seen) and last enriched (kind enriched) in it, exact because the
-- statement triggers below change it in the same transaction as the rows (writers take turns:
-- no contention). db.deal_count sums first_seen; "since" figures sum whole hours and count the
-- partial one on the index. SQLite counts its indexes fast enough and has no such table.

CREATE TABLE deal_hours (
    kind TEXT NOT NULL,          -- first_seen | enriched
    hour BIGINT NOT NULL,        -- unix seconds of the hour's start
    deals BIGINT NOT NULL,
    PRIMARY KEY (kind, hour)
);

INSERT INTO deal_hours (kind, hour, deals)
    SELECT 'first_seen', first_seen_at / 3600 * 3600, COUNT(*) FROM deals GROUP BY 2
    UNION ALL
    SELECT 'enriched', enriched_at / 3600 * 3600, COUNT(*) FROM deals
        WHERE enriched_at IS NOT NULL GROUP BY 2;

-- The rows of one statement, +1 per new row and -1 per old row version, per (kind, hour).
CREATE FUNCTION deal_hours_add(rows_added BIGINT, first_seen BIGINT[], enriched BIGINT[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO deal_hours AS h (kind, hour, deals)
    SELECT kind, hour, SUM(change) FROM (
        SELECT 'first_seen' AS kind, stamp / 3600 * 3600 AS hour, rows_added AS change
            FROM unnest(first_seen) AS stamp
        UNION ALL
        SELECT 'enriched', stamp / 3600 * 3600, rows_added
            FROM unnest(enriched) AS stamp WHERE stamp IS NOT NULL
    ) AS changes GROUP BY kind, hour
    ON CONFLICT (kind, hour) DO UPDATE SET deals = h.deals + excluded.deals
$$;

CREATE FUNCTION deal_hours_inserted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    PERFORM deal_hours_add(1, ARRAY(SELECT first_seen_at FROM new_rows),
                           ARRAY(SELECT enriched_at FROM new_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION deal_hours_deleted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    PERFORM deal_hours_add(-1, ARRAY(SELECT first_seen_at FROM old_rows),
                           ARRAY(SELECT enriched_at FROM old_rows));
    RETURN NULL;
END $$;

-- An update moves a row between hours only when first_seen_at or enriched_at changed: only
-- those rows are counted (a sighting changes neither).
CREATE FUNCTION deal_hours_updated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    PERFORM deal_hours_add(-1, ARRAY(SELECT o.first_seen_at FROM old_rows o JOIN new_rows n
                                     USING (asin) WHERE o.first_seen_at <> n.first_seen_at),
                           ARRAY(SELECT o.enriched_at FROM old_rows o JOIN new_rows n
                                 USING (asin) WHERE o.enriched_at IS DISTINCT FROM n.enriched_at));
    PERFORM deal_hours_add(1, ARRAY(SELECT n.first_seen_at FROM old_rows o JOIN new_rows n
                                    USING (asin) WHERE o.first_seen_at <> n.first_seen_at),
                           ARRAY(SELECT n.enriched_at FROM old_rows o JOIN new_rows n
                                 USING (asin) WHERE o.enriched_at IS DISTINCT FROM n.enriched_at));
    RETURN NULL;
END $$;

CREATE FUNCTION deal_hours_truncated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    DELETE FROM deal_hours;
    RETURN NULL;
END $$;

CREATE TRIGGER deal_hours_insert AFTER INSERT ON deals REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deal_hours_inserted();
CREATE TRIGGER deal_hours_update AFTER UPDATE ON deals
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deal_hours_updated();
CREATE TRIGGER deal_hours_delete AFTER DELETE ON deals REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deal_hours_deleted();
CREATE TRIGGER deal_hours_truncate AFTER TRUNCATE ON deals
    FOR EACH STATEMENT EXECUTE FUNCTION deal_hours_truncated();
