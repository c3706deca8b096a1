-- Schema v1 (docs/architecture.md). IF NOT EXISTS: a pre-migration database whose deals table
-- was first brought up to v1 columns by db.migrate() keeps its rows.

CREATE TABLE IF NOT EXISTS deals (
    asin TEXT PRIMARY KEY,
    domain_id INTEGER NOT NULL,
    title TEXT,
    image_url TEXT,
    root_category INTEGER,
    categories TEXT,            -- JSON array of category ids; NULL = unknown
    category_name TEXT,
    brand TEXT,
    price_type INTEGER NOT NULL,
    current_cents INTEGER,
    avg_cents INTEGER,
    delta_cents INTEGER,
    delta_percent INTEGER,
    amazon_cents INTEGER,
    new_cents INTEGER,
    used_cents INTEGER,
    list_price_cents INTEGER,
    sales_rank INTEGER,
    rating REAL,
    review_count INTEGER,
    offer_count_new INTEGER,
    offer_count_used INTEGER,
    deal_created_at INTEGER,
    last_update_at INTEGER NOT NULL,
    enriched_at INTEGER,
    first_seen_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    source TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS pipeline_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,        -- JSON
    updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    outcome TEXT,               -- running | ok | partial | skipped | failed
    deals_written INTEGER DEFAULT 0,
    tokens_spent INTEGER DEFAULT 0,
    error TEXT,
    detail TEXT,                -- JSON
    host TEXT,
    pid INTEGER,
    revision TEXT
);

CREATE TABLE IF NOT EXISTS janitor_removals (
    id INTEGER PRIMARY KEY,
    removed_at INTEGER,
    asin TEXT,
    last_seen_at INTEGER
);

CREATE INDEX IF NOT EXISTS runs_task ON runs (task, id);
CREATE INDEX IF NOT EXISTS runs_task_outcome_ended ON runs (task, outcome, ended_at);
CREATE INDEX IF NOT EXISTS janitor_removals_removed_at ON janitor_removals (removed_at);
