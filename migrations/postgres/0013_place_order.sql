-- An order placed in one statement, outside any explicit transaction: one round trip
-- instead of four (BEGIN, take_stock, the inserts, COMMIT), and the products' row locks
-- held only while the function runs, never across a round trip to the server.
--
-- The caller priced the order from the products as it read them a moment before (no
-- lock) and built its lines and events. The stock is taken by take_stock (migration 0012:
-- by primary key, in id order, so concurrent orders cannot deadlock). A product it skipped
-- (deleted or short), one no longer as the caller read it where the order depends on it
-- (sku, name, price, currency), and one whose stock falls to or below its low-stock
-- threshold (whose event and staff notifications the server writes) raise SQLSTATE
-- TD001: the statement rolls back whole and the server places the order the full way, in
-- a transaction, where every error is told apart.
--
-- The events come as the caller built them; each product's inventory.stock_changed
-- (at stock_events[i] for ids[i]) gets its stock and version here, from the update. `at`
-- is the order's time (its row's, and its products' updated_at), `events_at` the events'
-- (stamped when written, as every commit's are: see events/outbox.rs).
create function place_order(
    ids uuid[], quantities bigint[], unit_amounts bigint[], skus text[], names text[],
    the_currency text, the_order uuid, the_user uuid, the_status text, the_total bigint,
    at timestamptz,
    topics text[], kinds text[], audiences text[], users uuid[], data jsonb[],
    stock_events int[], events_at timestamptz
)
returns void
language plpgsql as $$
declare
    taken products;
    i int;
    placed int := 0;
begin
    -- take_stock's rule (by primary key, in id order, skipping the deleted and the short);
    -- what it took must be as the order was priced, and not fall low.
    for taken in select * from take_stock(ids, quantities, at) loop
        i := array_position(ids, taken.id);
        if taken.sku <> skus[i] or taken.name <> names[i]
                or taken.unit_amount <> unit_amounts[i] or taken.currency <> the_currency
                or (taken.stock <= taken.low_stock_threshold
                    and taken.stock + quantities[i] > taken.low_stock_threshold) then
            raise exception using errcode = 'TD001',
                message = 'this order needs the full path (a product changed or falls low)';
        end if;
        data[stock_events[i]] := data[stock_events[i]]
            || jsonb_build_object('stock', taken.stock, 'version', taken.version);
        placed := placed + 1;
    end loop;
    if placed < coalesce(array_length(ids, 1), 0) then
        raise exception using errcode = 'TD001',
            message = 'this order needs the full path (a product is short or gone)';
    end if;
    insert into orders (id, user_id, status, currency, total_amount, created_at, updated_at, version)
    values (the_order, the_user, the_status, the_currency, the_total, at, at, 1);
    insert into order_items (order_id, product_id, sku, name, unit_amount, quantity)
    select the_order, * from unnest(ids, skus, names, unit_amounts, quantities);
    insert into events (topic, type, audience, user_id, data, created_at)
    select t, k, a, u, d, events_at
    from unnest(topics, kinds, audiences, users, data) with ordinality as e(t, k, a, u, d, n)
    order by n;
end $$;
