-- Push delivery: who is connected where, what their apps acknowledged, what each user wants
-- by which channel, and the delivery worker's log (intents, deliveries, attempts).

-- Each running instance, with its last heartbeat: a crashed instance's presence rows are
-- ignored once its heartbeat is stale, and deleted with it.
create table live_instances (
    id      uuid primary key,
    seen_at timestamptz not null
);

-- The users with at least one live connection on an instance.
create table live_users (
    instance_id uuid not null references live_instances (id) on delete cascade,
    user_id     uuid not null,
    primary key (instance_id, user_id)
);
create index live_users_user_idx on live_users (user_id);

-- The highest seq any of the user's apps acknowledged having handled.
create table live_acks (
    user_id  uuid primary key references users (id) on delete cascade,
    seq      bigint not null,
    acked_at timestamptz not null
);

-- Which notification kinds go to push and to email when no app acknowledged them; no row
-- means the defaults (push for every kind, email for none). Comma-separated kinds.
create table delivery_preferences (
    user_id uuid primary key references users (id) on delete cascade,
    push    text not null,
    email   text not null
);

-- The delivery worker's cursor in the event stream. It starts at the current end: events
-- committed before this migration are not pushed.
create table delivery_state (
    id       integer primary key check (id = 1),
    last_seq bigint not null
);
insert into delivery_state (id, last_seq) select 1, last_seq from relay_state where id = 1;

-- One event for one user, waiting until `due_at` for an acknowledgement, then decided:
-- acked (a live app handled it), pushed, emailed, live_only (the user wants neither
-- channel for this kind), no_target (no device and no email channel), expired.
create table delivery_intents (
    event_seq  bigint not null,
    user_id    uuid not null references users (id) on delete cascade,
    -- The notification kind, as preferences name it.
    kind       text not null,
    payload    text not null,
    due_at     timestamptz not null,
    state      text not null,
    created_at timestamptz not null,
    decided_at timestamptz,
    primary key (event_seq, user_id)
);
create index delivery_intents_due_idx on delivery_intents (due_at) where state = 'waiting';
create index delivery_intents_user_idx on delivery_intents (user_id, event_seq);

-- One message to one target (a device, or the user's email address): at most one per
-- event and target, whatever restarts.
create table deliveries (
    id              uuid primary key,
    event_seq       bigint not null,
    user_id         uuid not null references users (id) on delete cascade,
    channel         text not null check (channel in ('webpush', 'fcm', 'apns', 'email')),
    -- The device (null once removed, and for email).
    device_id       uuid references devices (id) on delete set null,
    -- The device id or the email address: what makes a delivery unique with its event.
    target_key      text not null,
    -- What an operator may see of the target: an endpoint's host, a token's first characters.
    target          text not null,
    payload         text not null,
    -- pending, sending (claimed until lease_until), sent, gone, rejected, dead.
    status          text not null,
    attempts        integer not null,
    next_attempt_at timestamptz not null,
    lease_until     timestamptz,
    created_at      timestamptz not null,
    updated_at      timestamptz not null,
    -- When the event was committed, for the commit-to-provider latency.
    event_at        timestamptz not null,
    constraint deliveries_target_key unique (event_seq, target_key)
);
create index deliveries_next_idx on deliveries (next_attempt_at) where status in ('pending', 'sending');
create index deliveries_user_idx on deliveries (user_id, event_seq);

-- Every attempt at a delivery and what the provider answered.
create table delivery_attempts (
    delivery_id uuid not null references deliveries (id) on delete cascade,
    attempt     integer not null,
    at          timestamptz not null,
    -- delivered, gone, retry, rejected, rate_limited.
    outcome     text not null,
    detail      text,
    duration_ms bigint not null,
    primary key (delivery_id, attempt)
);
