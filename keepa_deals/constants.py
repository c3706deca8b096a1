"""Every constant shared between modules, in one place.

Facts about Keepa that the server reports on every response (refill rate, balance, costs actually
charged) are deliberately *not* here: they are read from the responses (DESIGN principle 1).
"""

# --- Redis key layout: one prefix per concern; nothing ever flushes a whole database.
KEY_PREFIX = "kd:"
LOCK_KEY_PREFIX = KEY_PREFIX + "lock:"
BUCKET_KEY_PREFIX = KEY_PREFIX + "bucket:"
HEARTBEAT_KEY_PREFIX = KEY_PREFIX + "hb:"
ALERT_CHECKED_KEY = KEY_PREFIX + "alerts:checked_at"  # when any host last checked for alerts
CELERY_KEY_PREFIX = "celery:"

# --- Lock names (other tools, e.g. Diagnostics/force_clear_locks.py, rely on these).
BACKFILL_LOCK = "backfill_deals_lock"
UPSERT_LOCK = "update_recent_deals_lock"
BEAT_LOCK = "celery_beat_lock"
KNOWN_LOCKS = (BACKFILL_LOCK, UPSERT_LOCK, BEAT_LOCK)
# pipeline_state name of a lock's fencing number: the latest holder's, in the database it guards.
FENCE_STATE_PREFIX = "lease_fence:"

# --- Task names as recorded in runs, statuses and the token ledger.
TASK_BACKFILL = "backfill_deals"
TASK_UPSERT = "update_recent_deals"
TASK_JANITOR = "remove_stale_deals"
PIPELINE_TASKS = (TASK_BACKFILL, TASK_UPSERT)

# --- Token scheduling priorities: a lower number is served first.
PRIORITY_UPSERTER = 0
PRIORITY_BACKFILL = 1

# --- How the backfiller shares its tokens while deals wait for /product data: at least this
# share goes to reading the query's pages (change detection: the changed-deal lag is one scan),
# the rest to enrichment (new -> changed -> stale). bench/bench_keepa_day.py measures the split.
SCAN_TOKEN_SHARE = 0.75
ENRICH_REASONS = ("new", "changed", "refresh")  # the enrichment queue's tiers, most urgent first

# --- Keepa plan sizes (tokens per minute) used to say what the next plan would give; Keepa's
# price list (keepa.com, API → plans) is the authority and may change.
KEEPA_PLAN_RATES = (20, 60, 250, 500, 1000, 2000, 4000)

# --- Keepa protocol facts (documented, not reported per response).
DEAL_PAGE_SIZE = 150
DEAL_PAGE_COST = 5  # an estimate for the reservation; reconciled with tokensConsumed
MAX_DEALS_PER_QUERY = 10_000
DEAL_RESULT_CACHE_MS = 120_000  # Keepa serves a query's result set from a 120 s cache
MAX_ASINS_PER_PRODUCT_CALL = 100
KEEPA_EPOCH_OFFSET_MINUTES = 21_564_000  # minutes from 1970-01-01 to 2011-01-01 (UTC)
UNKNOWN_ROOT_CATEGORY = 9_223_372_036_854_775_807
REAL_KEEPA_API_URL = "https://api.keepa.com"
KEEPA_MINUTE_MS = 60_000  # Keepa minutes are server time: one refill tick
REAL_REFILL_PERIOD_MS = KEEPA_MINUTE_MS
