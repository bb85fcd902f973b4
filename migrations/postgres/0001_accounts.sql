-- Accounts and their refresh tokens.

create table users (
    id            uuid primary key,
    -- Stored normalised (trimmed, lower case), so uniqueness is case-insensitive.
    email         text not null,
    password_hash text not null,
    role          text not null check (role in ('customer', 'staff', 'admin')),
    -- Bumped by a password change, logout-all, a role change or disabling: every access
    -- token carries the version it was issued under and is refused once it differs.
    token_version bigint not null default 0,
    disabled      boolean not null default false,
    created_at    timestamptz not null,
    updated_at    timestamptz not null,
    constraint users_email_key unique (email)
);

create index users_role_idx on users (role) where not disabled;

create table refresh_tokens (
    id          uuid primary key,
    user_id     uuid not null references users (id) on delete cascade,
    -- Every token rotated from one login shares its family; reuse revokes the family.
    family_id   uuid not null,
    -- SHA-256 of the token; the token itself is never stored.
    token_hash  bytea not null,
    created_at  timestamptz not null,
    expires_at  timestamptz not null,
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    constraint refresh_tokens_hash_key unique (token_hash)
);

create index refresh_tokens_family_idx on refresh_tokens (family_id);
create index refresh_tokens_user_idx on refresh_tokens (user_id);
