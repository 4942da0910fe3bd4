-- Quotas of LLM tokens, and quotas scoped to one model: counters and
-- charges are kept per quota name (tollgate_wire::Quota::name), the kind
-- and, for a scoped quota, '@' and the model: at most 14 + 1 + 256 = 271
-- ASCII bytes ('output_tokens@' and a model of up to
-- tollgate_wire::limits::MAX_SCOPE_MODEL_LEN visible ASCII bytes). With
-- ascii, one byte a character: limit_counters' primary key is at most
-- 8 + 302 + 8 bytes, far below InnoDB's index key limit (767 bytes in the
-- COMPACT row format, 3072 in DYNAMIC). Widening past 255 bytes takes a
-- two-byte length prefix, so both tables are copied (they hold at most
-- 40 days of counters and charges).
ALTER TABLE limit_counters
    MODIFY COLUMN quota VARCHAR(300) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

ALTER TABLE limit_charges
    MODIFY COLUMN quota VARCHAR(300) CHARACTER SET ascii COLLATE ascii_bin NOT NULL;

-- A key's limits in their canonical spelling: up to 16 quotas, each of
-- them possibly scoped, in at most tollgate_wire::limits::MAX_SPEC_LEN
-- bytes.
ALTER TABLE api_keys
    MODIFY COLUMN limits_spec VARCHAR(8192) CHARACTER SET ascii COLLATE ascii_bin NULL;
