-- API tokens of `salespulse serve`, created and revoked with `salespulse tokens`. Only the SHA-256
-- of a token is stored (tokens are 256 random bits, so a fast hash is enough: there is nothing to
-- brute-force). In ClickHouse rather than a local file so that several `serve` replicas behind a
-- load balancer share one set of tokens; each replica re-reads it every few seconds.
-- A revocation writes the row again with revoked_at set; the newest row (by updated_at) wins.
CREATE TABLE IF NOT EXISTS {database}.ingest_tokens
(
    token_id   String,
    name       String,
    token_hash String,
    scopes     Array(LowCardinality(String)),
    rep_id     Nullable(String),
    created_at DateTime64(3, 'UTC'),
    revoked_at Nullable(DateTime64(3, 'UTC')),
    updated_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY token_id;
