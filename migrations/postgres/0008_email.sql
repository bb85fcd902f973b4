-- Email: whether a user's address is verified, and the single-use tokens of the links that
-- reset a password or verify an address.

-- Existing users start unverified: nobody has proven that they read mail at their address.
-- Nothing depends on it unless TIDINGS_REQUIRE_VERIFIED_EMAIL is turned on.
alter table users add column email_verified boolean not null default false;

create table email_tokens (
    id          uuid primary key,
    user_id     uuid not null references users (id) on delete cascade,
    purpose     text not null check (purpose in ('password_reset', 'verify_email')),
    -- SHA-256 of the token; the token itself is only in the email.
    token_hash  bytea not null,
    -- The address the link was sent to: a verification is of that address.
    email       text not null,
    created_at  timestamptz not null,
    expires_at  timestamptz not null,
    -- Set when the link is used (or superseded by a completed reset): it works once.
    used_at     timestamptz,
    constraint email_tokens_hash_key unique (token_hash)
);

create index email_tokens_user_idx on email_tokens (user_id, purpose) where used_at is null;
