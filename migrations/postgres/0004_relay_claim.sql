-- The relay's claim in one round trip instead of six (begin, lock, select, two updates,
-- commit): each of them waited for the relay's thread to be scheduled again on a busy
-- core. Lock the counter, give the oldest unsequenced events the next numbers, return
-- them. Each statement of a function takes its own snapshot (READ COMMITTED), so a relay
-- that waited for the counter's lock sees the numbers the other one handed out.
create function relay_claim(batch integer) returns setof events
language plpgsql as $$
declare
    last bigint;
begin
    select last_seq into last from relay_state where id = 1 for update;
    return query
    with pending as (
        select id, row_number() over (order by id) as ord
        from events where seq is null order by id limit batch
    ), numbered as (
        update events e set seq = last + p.ord from pending p where e.id = p.id returning e.*
    ), counter as (
        update relay_state set last_seq = last + (select count(*) from numbered) where id = 1
    )
    select * from numbered;
end $$;
