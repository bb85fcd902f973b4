-- As on PostgreSQL: `seq` keeps one index (the unique constraint's), and the prune walks
-- the stream by seq instead of an index on created_at. Each was written at every event's
-- insert or numbering.
drop index events_seq_idx;
drop index events_created_idx;
