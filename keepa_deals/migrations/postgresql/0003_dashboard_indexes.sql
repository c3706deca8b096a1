-- The dashboard's sort and filter indexes, as ../0003_dashboard_indexes.sql. The text columns
-- use the C collation's byte order, as SQLite's BINARY does, so both backends sort alike.

CREATE INDEX deals_title_asin ON deals (title COLLATE "C", asin);
CREATE INDEX deals_category_name_asin ON deals (category_name COLLATE "C", asin);
CREATE INDEX deals_root_category_asin ON deals (root_category, asin);
CREATE INDEX deals_current_cents_asin ON deals (current_cents, asin);
CREATE INDEX deals_avg_cents_asin ON deals (avg_cents, asin);
CREATE INDEX deals_delta_percent_asin ON deals (delta_percent, asin);
CREATE INDEX deals_sales_rank_asin ON deals (sales_rank, asin);
CREATE INDEX deals_rating_asin ON deals (rating, asin);
CREATE INDEX deals_review_count_asin ON deals (review_count, asin);
CREATE INDEX deals_offer_count_new_asin ON deals (offer_count_new, asin);
