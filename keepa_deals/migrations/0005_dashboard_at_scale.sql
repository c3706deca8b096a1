-- The dashboard at 1 000 000 deals (keepa_deals/web/deal_query.py).
--
-- Title search: an FTS5 trigram index of deal titles, so a search for any substring of 3 or
-- more characters finds its candidates without reading every title (the dashboard then
-- applies LIKE: case-insensitive for ASCII letters). External content: the index holds only
-- the trigrams; the titles stay in deals, referenced by rowid. Triggers keep it in sync and
-- touch it only when a title is written: an insert with a title, a delete of a row with one,
-- an UPDATE whose SET names title and changes it (the store's updates name only the columns
-- that change). NULL titles are never indexed. A VACUUM may renumber the rowids of deals (it
-- has no INTEGER PRIMARY KEY): after one, rebuild the index with
--   INSERT INTO deals_title_fts (deals_title_fts) VALUES ('rebuild');
--
-- Sorting by first seen (the default) or updated: 0002's single-column indexes become
-- (column, asin), as 0003's, so the order's tie-breaker needs no sort step and a bounded walk
-- finds where it ends on the index alone. Their other readers (deals added since, newest deal,
-- freshness) use the leading column as before.

CREATE VIRTUAL TABLE deals_title_fts USING fts5(
    title, content='deals', content_rowid='rowid', tokenize='trigram'
);

INSERT INTO deals_title_fts (rowid, title) SELECT rowid, title FROM deals WHERE title IS NOT NULL;

CREATE TRIGGER deals_title_fts_insert AFTER INSERT ON deals
WHEN new.title IS NOT NULL BEGIN
    INSERT INTO deals_title_fts (rowid, title) VALUES (new.rowid, new.title);
END;

CREATE TRIGGER deals_title_fts_delete AFTER DELETE ON deals
WHEN old.title IS NOT NULL BEGIN
    INSERT INTO deals_title_fts (deals_title_fts, rowid, title)
        VALUES ('delete', old.rowid, old.title);
END;

CREATE TRIGGER deals_title_fts_update AFTER UPDATE OF title ON deals
WHEN old.title IS NOT new.title BEGIN
    INSERT INTO deals_title_fts (deals_title_fts, rowid, title)
        SELECT 'delete', old.rowid, old.title WHERE old.title IS NOT NULL;
    INSERT INTO deals_title_fts (rowid, title)
        SELECT new.rowid, new.title WHERE new.title IS NOT NULL;
END;

DROP INDEX IF EXISTS deals_first_seen_at;
CREATE INDEX IF NOT EXISTS deals_first_seen_at_asin ON deals (first_seen_at, asin);
DROP INDEX IF EXISTS deals_last_update_at;
CREATE INDEX IF NOT EXISTS deals_last_update_at_asin ON deals (last_update_at, asin);
