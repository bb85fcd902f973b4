-- Push targets: a user's browsers (Web Push) and apps (FCM, APNs).

create table devices (
    id           uuid primary key,
    user_id      uuid not null references users (id) on delete cascade,
    kind         text not null check (kind in ('webpush', 'fcm', 'apns')),
    -- What the provider addresses: a Web Push endpoint URL, an FCM registration token or
    -- an APNs device token.
    target       text not null,
    -- Web Push: the subscription's public key (uncompressed P-256 point) and its auth
    -- secret, base64url.
    p256dh       text,
    auth         text,
    -- APNs: the app's bundle id and which gateway serves the token.
    topic        text,
    environment  text check (environment in ('sandbox', 'production')),
    created_at   timestamptz not null,
    last_used_at timestamptz,
    -- Registering the same target again finds this row instead of making another.
    constraint devices_target_key unique (user_id, kind, target)
);
