-- The market's history past the minute rows' retention: one row per model and hour, the averages
-- of the hour's minute rows (store.market_hourly_retention_days).
CREATE TABLE IF NOT EXISTS market_hourly (
    ts_ms                  INTEGER NOT NULL,
    model                  TEXT    NOT NULL,
    source                 TEXT    NOT NULL,
    minutes                INTEGER NOT NULL,
    gpus_total             INTEGER NOT NULL,
    gpus_rented            INTEGER NOT NULL,
    gpus_available         INTEGER NOT NULL,
    utilisation            REAL    NOT NULL,
    price_available_median REAL,
    price_available_p10    REAL,
    price_available_p90    REAL,
    price_rented_median    REAL,
    PRIMARY KEY (model, ts_ms)
);
CREATE INDEX IF NOT EXISTS market_hourly_ts ON market_hourly(ts_ms);
CREATE INDEX IF NOT EXISTS messages_created ON messages(created_at_ms);
CREATE INDEX IF NOT EXISTS alert_events_fired ON alert_events(fired_at_ms);
