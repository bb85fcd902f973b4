-- Email: whether a user's address is verified, and the single-use tokens of the links that
-- reset a password or verify an address. See the PostgreSQL migration for each column.

alter table users add column email_verified integer not null default 0;

create table email_tokens (
    id          blob primary key,
    user_id     blob not null references users (id) on delete cascade,
    purpose     text not null check (purpose in ('password_reset', 'verify_email')),
    token_hash  blob not null unique,
    email       text not null,
    created_at  text not null,
    expires_at  text not null,
    used_at     text
) strict;

create index email_tokens_user_idx on email_tokens (user_id, purpose) where used_at is null;
