-- Commits no longer NOTIFY from a trigger: PostgreSQL serialises the commits of notifying
-- transactions (a database-wide lock held until each one's WAL is flushed), so the outbox
-- trigger made every write wait for the previous one's flush. The instance that commits
-- now wakes its own relay, or sends one NOTIFY after the commit (events/relay.rs).
drop trigger events_wake_relay on events;
drop function tidings_outbox_notify();
