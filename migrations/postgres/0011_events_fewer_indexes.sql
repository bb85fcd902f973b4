-- Two indexes of the outbox that cost more than they gave. An event is written twice: at
-- insert, and when the relay numbers it, an update that can never be heap-only (`seq` is
-- indexed), so it writes a new entry into every index of the table. Measured with
-- pg_waldump over an orders run: 25 B-tree insertions per order, 3 events per order.
--
-- events_seq_idx was a partial index on `seq`, which the unique constraint's index
-- (events_seq_key) already covers for every read by seq. events_created_idx served only
-- the prune, which now walks the stream by seq from its oldest event, reading what it
-- deletes.
drop index events_seq_idx;
drop index events_created_idx;
