-- The catalog, orders, notifications, the event outbox and the audit log.

create table products (
    id                  blob primary key,
    -- Stored upper case, so uniqueness is case-insensitive.
    sku                 text not null unique,
    name                text not null,
    -- The name in lower case, computed by the app so both backends sort and search alike.
    name_key            text not null,
    description         text not null default '',
    unit_amount         integer not null check (unit_amount >= 0),
    currency            text not null check (length(currency) = 3),
    stock               integer not null check (stock >= 0),
    low_stock_threshold integer not null default 0 check (low_stock_threshold >= 0),
    created_at          text not null,
    updated_at          text not null,
    deleted_at          text,
    version             integer not null default 1
) strict;

create index products_name_idx on products (name_key, id);
create index products_price_idx on products (unit_amount, id);
create index products_created_idx on products (created_at, id);
create index products_stock_idx on products (stock, id);

create table orders (
    id           blob primary key,
    user_id      blob not null references users (id),
    status       text not null check (status in ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    currency     text not null,
    total_amount integer not null,
    created_at   text not null,
    updated_at   text not null,
    version      integer not null default 1
) strict;

create index orders_user_idx on orders (user_id, id);
create index orders_status_idx on orders (status, id);

create table order_items (
    order_id    blob not null references orders (id) on delete cascade,
    product_id  blob not null references products (id),
    sku         text not null,
    name        text not null,
    unit_amount integer not null,
    quantity    integer not null check (quantity > 0),
    primary key (order_id, product_id)
) strict;

create table idempotency_keys (
    user_id         blob not null references users (id) on delete cascade,
    key             text not null,
    request_hash    blob not null,
    response_status integer not null,
    response_body   text not null,
    created_at      text not null,
    primary key (user_id, key)
) strict;

create table notifications (
    id         blob primary key,
    user_id    blob not null references users (id) on delete cascade,
    kind       text not null,
    title      text not null,
    body       text not null,
    data       text not null,
    read_at    text,
    created_at text not null
) strict;

create index notifications_user_idx on notifications (user_id, id);
create index notifications_unread_idx on notifications (user_id, id) where read_at is null;

create table notification_mutes (
    user_id blob not null references users (id) on delete cascade,
    kind    text not null,
    primary key (user_id, kind)
) strict;

create table events (
    id         integer primary key autoincrement,
    seq        integer unique,
    topic      text not null,
    type       text not null,
    audience   text not null check (audience in ('everyone', 'staff', 'user', 'user_and_staff')),
    user_id    blob,
    data       text not null,
    created_at text not null
) strict;

create index events_unsequenced_idx on events (id) where seq is null;

create table audit_log (
    id          blob primary key,
    actor_id    blob not null references users (id),
    action      text not null,
    target_type text not null,
    target_id   text not null,
    summary     text not null,
    request_id  text,
    created_at  text not null
) strict;

create index audit_log_actor_idx on audit_log (actor_id, id);
create index audit_log_action_idx on audit_log (action, id);
create index audit_log_created_idx on audit_log (created_at, id);
