-- usage_log keeps three indexes, not four: the index on created_at alone
-- (0003) cost each row's insert about a third of the database's CPU on
-- MariaDB (bench/README.md, "The cost of a usage row"), and SQLite keeps the
-- same schema. Its one reader was `tollgate usage prune`, which now deletes
-- each key's old rows through (api_key_id, created_at), the keys read from
-- usage_daily (which holds every key id with rows).
DROP INDEX ix_usage_log_created;
