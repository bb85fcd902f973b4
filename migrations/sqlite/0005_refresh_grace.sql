-- A refresh token's successor, sealed with the token itself (XOR with a hash of it), so
-- that the same refresh repeated moments later (two tabs at once) gets the same answer.
-- Without the token it reveals nothing; rows rotated before this have none, and their
-- reuse revokes the family as before.
alter table refresh_tokens add column successor_seal blob;
