-- usage_log keeps three indexes, not four: the index on created_at alone
-- (0003) cost the database about a third of each row's insert (a usage
-- row: 18.5 µs of MariaDB CPU with it, 12.2 without; bench/README.md, "The
-- cost of a usage row"). Its one reader was `tollgate usage prune`, which
-- now deletes each key's old rows through (api_key_id, created_at), the
-- keys read from usage_daily (which holds every key id with rows).
ALTER TABLE usage_log DROP INDEX ix_usage_log_created;
