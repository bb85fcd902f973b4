-- An order's stock taken one product at a time, each by its primary key.
--
-- It was one statement (an ordered `for update` CTE joined to an `update ... from
-- unnest`). On a catalog of a few pages the planner read products whole for it, rightly by
-- its cost model of pages, but a profile of PostgreSQL during `bench/orders.sh` put 8 % of
-- its CPU in that scan: every tuple of the table, HOT chains included, tested for
-- visibility and against the array of ids. Here each product is one `where id = ...`
-- update, a plan that does not depend on the table's size or statistics.
--
-- The ids come sorted, so concurrent orders lock their products in the same order and
-- cannot deadlock. A product that is deleted or short is skipped (and not locked): the
-- caller sees fewer rows than ids and rolls back.
create function take_stock(ids uuid[], quantities bigint[], at timestamptz)
returns setof products
language plpgsql as $$
declare
    taken products;
begin
    for i in 1 .. coalesce(array_length(ids, 1), 0) loop
        update products p
        set stock = p.stock - quantities[i], version = p.version + 1, updated_at = at
        where p.id = ids[i] and p.deleted_at is null and p.stock >= quantities[i]
        returning p.* into taken;
        if found then
            return next taken;
        end if;
    end loop;
end $$;
