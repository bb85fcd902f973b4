-- The catalog, orders, notifications, the event outbox and the audit log.

create extension if not exists pg_trgm;

create table products (
    id                  uuid primary key,
    -- Stored upper case, so uniqueness is case-insensitive.
    sku                 text not null,
    name                text not null,
    -- The name in lower case, computed by the app so both backends sort and search alike.
    name_key            text not null,
    description         text not null default '',
    -- The price in the currency's minor units.
    unit_amount         bigint not null check (unit_amount >= 0),
    currency            text not null check (currency ~ '^[A-Z]{3}$'),
    stock               bigint not null check (stock >= 0),
    low_stock_threshold bigint not null default 0 check (low_stock_threshold >= 0),
    created_at          timestamptz not null,
    updated_at          timestamptz not null,
    deleted_at          timestamptz,
    -- Bumped by every change; the ETag and If-Match compare it.
    version             bigint not null default 1,
    constraint products_sku_key unique (sku)
);

-- Keyset pagination: one index per sort, with id as the tie-breaker. Names sort bytewise
-- (collate "C") so that both backends order them the same way.
create index products_name_idx on products (name_key collate "C", id);
create index products_price_idx on products (unit_amount, id);
create index products_created_idx on products (created_at, id);
create index products_stock_idx on products (stock, id);
-- q searches name and sku by substring.
create index products_name_trgm_idx on products using gin (name_key gin_trgm_ops);
create index products_sku_trgm_idx on products using gin (lower(sku) gin_trgm_ops);

create table orders (
    id           uuid primary key,
    user_id      uuid not null references users (id),
    status       text not null check (status in ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    currency     text not null,
    total_amount bigint not null,
    created_at   timestamptz not null,
    updated_at   timestamptz not null,
    version      bigint not null default 1
);

create index orders_user_idx on orders (user_id, id);
create index orders_status_idx on orders (status, id);

create table order_items (
    order_id    uuid not null references orders (id) on delete cascade,
    product_id  uuid not null references products (id),
    -- What the customer bought, as it was then.
    sku         text not null,
    name        text not null,
    unit_amount bigint not null,
    quantity    bigint not null check (quantity > 0),
    primary key (order_id, product_id)
);

-- A retried POST with the same key returns the first answer.
create table idempotency_keys (
    user_id         uuid not null references users (id) on delete cascade,
    key             text not null,
    request_hash    bytea not null,
    response_status integer not null,
    response_body   jsonb not null,
    created_at      timestamptz not null,
    primary key (user_id, key)
);

create table notifications (
    id         uuid primary key,
    user_id    uuid not null references users (id) on delete cascade,
    kind       text not null,
    title      text not null,
    body       text not null,
    data       jsonb not null,
    read_at    timestamptz,
    created_at timestamptz not null
);

create index notifications_user_idx on notifications (user_id, id);
create index notifications_unread_idx on notifications (user_id, id) where read_at is null;

-- Kinds of notification a user does not want; a muted kind is never created for them.
create table notification_mutes (
    user_id uuid not null references users (id) on delete cascade,
    kind    text not null,
    primary key (user_id, kind)
);

-- The outbox: written in the same transaction as the change it reports. The relay gives
-- each committed row its place in the stream (seq).
create table events (
    id         bigserial primary key,
    seq        bigint,
    topic      text not null,
    type       text not null,
    -- everyone | staff | user | user_and_staff; user_id names the user for the last two.
    audience   text not null check (audience in ('everyone', 'staff', 'user', 'user_and_staff')),
    user_id    uuid,
    data       jsonb not null,
    created_at timestamptz not null,
    constraint events_seq_key unique (seq)
);

create index events_unsequenced_idx on events (id) where seq is null;

create table audit_log (
    id          uuid primary key,
    actor_id    uuid not null references users (id),
    action      text not null,
    target_type text not null,
    target_id   text not null,
    summary     jsonb not null,
    request_id  text,
    created_at  timestamptz not null
);

create index audit_log_actor_idx on audit_log (actor_id, id);
create index audit_log_action_idx on audit_log (action, id);
create index audit_log_created_idx on audit_log (created_at, id);
