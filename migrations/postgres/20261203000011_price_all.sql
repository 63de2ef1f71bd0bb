-- The distribution over all of a model's GPUs, rented and available together (500.farm's
-- stats.all): its median and 10th and 90th percentiles, beside the available and rented ones.
ALTER TABLE market_snapshots ADD COLUMN price_all_median DOUBLE PRECISION;
ALTER TABLE market_snapshots ADD COLUMN price_all_p10 DOUBLE PRECISION;
ALTER TABLE market_snapshots ADD COLUMN price_all_p90 DOUBLE PRECISION;
ALTER TABLE market_hourly ADD COLUMN price_all_median DOUBLE PRECISION;
ALTER TABLE market_hourly ADD COLUMN price_all_p10 DOUBLE PRECISION;
ALTER TABLE market_hourly ADD COLUMN price_all_p90 DOUBLE PRECISION;
