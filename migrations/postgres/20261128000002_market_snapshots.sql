-- Per-model aggregates, written once a minute: the market's history.
CREATE TABLE IF NOT EXISTS market_snapshots (
    ts_ms                  BIGINT NOT NULL,
    model                  TEXT    NOT NULL,
    source                 TEXT    NOT NULL,
    gpus_total             BIGINT NOT NULL,
    gpus_rented            BIGINT NOT NULL,
    gpus_available         BIGINT NOT NULL,
    utilisation            DOUBLE PRECISION    NOT NULL,
    price_available_median DOUBLE PRECISION,
    price_available_p10    DOUBLE PRECISION,
    price_available_p90    DOUBLE PRECISION,
    price_rented_median    DOUBLE PRECISION,
    data                   TEXT    NOT NULL,
    PRIMARY KEY (model, ts_ms)
);
CREATE INDEX IF NOT EXISTS market_snapshots_ts ON market_snapshots(ts_ms);
