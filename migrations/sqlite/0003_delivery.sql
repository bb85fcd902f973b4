-- Live delivery: the relay's counter and stream tickets. (The relay is woken in-process.)

create table relay_state (
    id             integer primary key check (id = 1),
    last_seq       integer not null,
    pruned_through integer not null
) strict;
insert into relay_state (id, last_seq, pruned_through) values (1, 0, 0);

create index events_seq_idx on events (seq) where seq is not null;
create index events_created_idx on events (created_at);

create table stream_tickets (
    ticket_hash blob primary key,
    user_id     blob not null references users (id) on delete cascade,
    -- The access token it was made from: its version, and when it expires (the stream
    -- ends then).
    token_version    integer not null,
    token_expires_at text not null,
    expires_at  text not null
) strict;
create index stream_tickets_expires_idx on stream_tickets (expires_at);
