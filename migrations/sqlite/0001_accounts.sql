-- Accounts and their refresh tokens. Types follow sqlx's SQLite encodings: UUIDs are
-- 16-byte blobs, timestamps RFC 3339 text, booleans integers.

create table users (
    id            blob primary key,
    -- Stored normalised (trimmed, lower case), so uniqueness is case-insensitive.
    email         text not null unique,
    password_hash text not null,
    role          text not null check (role in ('customer', 'staff', 'admin')),
    -- Bumped by a password change, logout-all, a role change or disabling.
    token_version integer not null default 0,
    disabled      integer not null default 0,
    created_at    text not null,
    updated_at    text not null
) strict;

create index users_role_idx on users (role) where not disabled;

create table refresh_tokens (
    id          blob primary key,
    user_id     blob not null references users (id) on delete cascade,
    family_id   blob not null,
    token_hash  blob not null unique,
    created_at  text not null,
    expires_at  text not null,
    rotated_at  text,
    revoked_at  text
) strict;

create index refresh_tokens_family_idx on refresh_tokens (family_id);
create index refresh_tokens_user_idx on refresh_tokens (user_id);
