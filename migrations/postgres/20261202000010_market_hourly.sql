-- The market's history past the minute rows' retention: one row per model and hour, the averages
-- of the hour's minute rows (store.market_hourly_retention_days).
CREATE TABLE IF NOT EXISTS market_hourly (
    ts_ms                  BIGINT NOT NULL,
    model                  TEXT    NOT NULL,
    source                 TEXT    NOT NULL,
    minutes                BIGINT NOT NULL,
    gpus_total             BIGINT NOT NULL,
    gpus_rented            BIGINT NOT NULL,
    gpus_available         BIGINT NOT NULL,
    utilisation            DOUBLE PRECISION    NOT NULL,
    price_available_median DOUBLE PRECISION,
    price_available_p10    DOUBLE PRECISION,
    price_available_p90    DOUBLE PRECISION,
    price_rented_median    DOUBLE PRECISION,
    PRIMARY KEY (model, ts_ms)
);
CREATE INDEX IF NOT EXISTS market_hourly_ts ON market_hourly(ts_ms);
CREATE INDEX IF NOT EXISTS messages_created ON messages(created_at_ms);
CREATE INDEX IF NOT EXISTS alert_events_fired ON alert_events(fired_at_ms);
