-- Live delivery: the relay's counter, stream tickets, and the commit wake-up.

-- The one row the relay numbers events from: contiguous, never reused.
create table relay_state (
    id             integer primary key check (id = 1),
    -- The last seq given to an event.
    last_seq       bigint not null,
    -- Events up to this seq have been pruned; a resume from before it gets a reset.
    pruned_through bigint not null
);
insert into relay_state (id, last_seq, pruned_through) values (1, 0, 0);

create index events_seq_idx on events (seq) where seq is not null;
create index events_created_idx on events (created_at);

-- Single-use tickets with which browsers open a stream (EventSource cannot send headers).
create table stream_tickets (
    -- SHA-256 of the ticket; the ticket itself is never stored.
    ticket_hash bytea primary key,
    user_id     uuid not null references users (id) on delete cascade,
    -- The access token it was made from: its version, and when it expires (the stream
    -- ends then).
    token_version    bigint not null,
    token_expires_at timestamptz not null,
    expires_at  timestamptz not null
);
create index stream_tickets_expires_idx on stream_tickets (expires_at);

-- Every commit that wrote events wakes the relay, on whichever instance holds it. NOTIFY is
-- delivered at commit, and only if the transaction commits.
create function tidings_outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('tidings_outbox', '');
    return null;
end
$$;
create trigger events_wake_relay after insert on events
    for each statement execute function tidings_outbox_notify();
