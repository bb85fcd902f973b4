-- Push targets: a user's browsers (Web Push) and apps (FCM, APNs). See the PostgreSQL
-- migration for what each column holds.

create table devices (
    id           blob primary key,
    user_id      blob not null references users (id) on delete cascade,
    kind         text not null check (kind in ('webpush', 'fcm', 'apns')),
    target       text not null,
    p256dh       text,
    auth         text,
    topic        text,
    environment  text check (environment in ('sandbox', 'production')),
    created_at   text not null,
    last_used_at text,
    unique (user_id, kind, target)
) strict;
