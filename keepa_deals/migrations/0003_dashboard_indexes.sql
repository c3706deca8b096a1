-- Indexes for the dashboard's deals table on 1 000 000 rows: one per sortable column, ending
-- with asin, the dashboard's tie-breaker ("ORDER BY <column> <dir> NULLS LAST, asin <dir>"
-- walks the index with no sort step, also for the ASC NULLS LAST order), and the filters
-- (price range, drop %, category, sales rank range) use the same indexes.
-- asin sorts by the primary key; first_seen_at and last_update_at by 0002's indexes.

CREATE INDEX IF NOT EXISTS deals_title_asin ON deals (title, asin);
CREATE INDEX IF NOT EXISTS deals_category_name_asin ON deals (category_name, asin);
CREATE INDEX IF NOT EXISTS deals_root_category_asin ON deals (root_category, asin);
CREATE INDEX IF NOT EXISTS deals_current_cents_asin ON deals (current_cents, asin);
CREATE INDEX IF NOT EXISTS deals_avg_cents_asin ON deals (avg_cents, asin);
CREATE INDEX IF NOT EXISTS deals_delta_percent_asin ON deals (delta_percent, asin);
CREATE INDEX IF NOT EXISTS deals_sales_rank_asin ON deals (sales_rank, asin);
CREATE INDEX IF NOT EXISTS deals_rating_asin ON deals (rating, asin);
CREATE INDEX IF NOT EXISTS deals_review_count_asin ON deals (review_count, asin);
CREATE INDEX IF NOT EXISTS deals_offer_count_new_asin ON deals (offer_count_new, asin);
