-- Push delivery: who is connected, what their apps acknowledged, what each user wants by
-- which channel, and the delivery worker's log. See the PostgreSQL migration for what each
-- column holds.

create table live_instances (
    id      blob primary key,
    seen_at text not null
) strict;

create table live_users (
    instance_id blob not null references live_instances (id) on delete cascade,
    user_id     blob not null,
    primary key (instance_id, user_id)
) strict;
create index live_users_user_idx on live_users (user_id);

create table live_acks (
    user_id  blob primary key references users (id) on delete cascade,
    seq      integer not null,
    acked_at text not null
) strict;

create table delivery_preferences (
    user_id blob primary key references users (id) on delete cascade,
    push    text not null,
    email   text not null
) strict;

create table delivery_state (
    id       integer primary key check (id = 1),
    last_seq integer not null
) strict;
insert into delivery_state (id, last_seq) select 1, last_seq from relay_state where id = 1;

create table delivery_intents (
    event_seq  integer not null,
    user_id    blob not null references users (id) on delete cascade,
    kind       text not null,
    payload    text not null,
    due_at     text not null,
    state      text not null,
    created_at text not null,
    decided_at text,
    primary key (event_seq, user_id)
) strict;
create index delivery_intents_due_idx on delivery_intents (due_at) where state = 'waiting';
create index delivery_intents_user_idx on delivery_intents (user_id, event_seq);

create table deliveries (
    id              blob primary key,
    event_seq       integer not null,
    user_id         blob not null references users (id) on delete cascade,
    channel         text not null check (channel in ('webpush', 'fcm', 'apns', 'email')),
    device_id       blob references devices (id) on delete set null,
    target_key      text not null,
    target          text not null,
    payload         text not null,
    status          text not null,
    attempts        integer not null,
    next_attempt_at text not null,
    lease_until     text,
    created_at      text not null,
    updated_at      text not null,
    event_at        text not null,
    unique (event_seq, target_key)
) strict;
create index deliveries_next_idx on deliveries (next_attempt_at) where status in ('pending', 'sending');
create index deliveries_user_idx on deliveries (user_id, event_seq);

create table delivery_attempts (
    delivery_id blob not null references deliveries (id) on delete cascade,
    attempt     integer not null,
    at          text not null,
    outcome     text not null,
    detail      text,
    duration_ms integer not null,
    primary key (delivery_id, attempt)
) strict;
