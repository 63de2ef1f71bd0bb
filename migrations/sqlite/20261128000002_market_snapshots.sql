-- Per-model aggregates, written once a minute: the market's history.
CREATE TABLE IF NOT EXISTS market_snapshots (
    ts_ms                  INTEGER NOT NULL,
    model                  TEXT    NOT NULL,
    source                 TEXT    NOT NULL,
    gpus_total             INTEGER NOT NULL,
    gpus_rented            INTEGER NOT NULL,
    gpus_available         INTEGER NOT NULL,
    utilisation            REAL    NOT NULL,
    price_available_median REAL,
    price_available_p10    REAL,
    price_available_p90    REAL,
    price_rented_median    REAL,
    data                   TEXT    NOT NULL,
    PRIMARY KEY (model, ts_ms)
);
CREATE INDEX IF NOT EXISTS market_snapshots_ts ON market_snapshots(ts_ms);
