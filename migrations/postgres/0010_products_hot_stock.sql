-- Every order changes the stock of its products. With `stock` in an index, each of those
-- updates wrote a new entry into every index of products (eight, two of them trigram
-- GINs) and left the old row for vacuum: at 1,000 orders/s over 200 products the table
-- grew by 40,000 dead rows in 20 seconds and PostgreSQL spent 1.2 ms of CPU per order.
-- Without it the update is heap-only (HOT): the row's new version goes on the same page,
-- no index is touched, and the old one is pruned as the page is next read. The room left
-- free on each page (fillfactor) is what lets the new version stay on it.
--
-- The price: a product list sorted by stock (`sort=stock`, staff's view) reads every
-- product and sorts them, instead of walking an index.
drop index products_stock_idx;
alter table products set (fillfactor = 70);
