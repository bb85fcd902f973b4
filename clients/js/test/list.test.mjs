// Snapshot then stream against a real server: lists loaded page by page while other
// clients change what they hold end equal to the database, every time.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Server, backends, product, until } from "./helpers.mjs";

/** @typedef {import("../src/index.js").Tidings} Tidings */
/** @typedef {import("../src/index.js").LiveList<any>} LiveList */

const ROUNDS = 3;

/** Every item of a REST list, page by page. @param {Tidings} client @param {string} path @param {Record<string, any>} query */
async function everything(client, path, query) {
  const items = [];
  let cursor = null;
  do {
    const params = new URLSearchParams({ ...query, limit: "100", ...(cursor ? { cursor } : {}) });
    const page = await client.get(`${path}?${params}`);
    items.push(...page.items);
    cursor = page.next;
  } while (cursor);
  return items;
}

/**
 * Waits until the list holds exactly `expected` (compared without `omit`), or fails with both.
 * @param {LiveList} list @param {any[]} expected @param {string[]} [omit]
 */
async function equals(list, expected, omit = []) {
  /** @param {any[]} items */
  const text = (items) => JSON.stringify(items.map((i) => ({ ...i, ...Object.fromEntries(omit.map((k) => [k, undefined])) })));
  const want = text(expected);
  const waiting = until(() => text(list.items) === want, "the list to equal the database", 10000);
  const off = list.onChange(waiting.poke);
  try {
    await waiting.done;
  } catch {
    assert.deepEqual(JSON.parse(text(list.items)), JSON.parse(want));
  } finally {
    off();
  }
}

/** Runs `step`; refusals that racing writers cause (409, or 404 for a deleted product) are part of it. @param {() => Promise<unknown>} step */
async function attempt(step) {
  try {
    await step();
  } catch (e) {
    if (![404, 409].includes(/** @type {any} */ (e).status)) throw e;
  }
}

/** Runs `step` over and over until `stop` resolves. @param {() => Promise<unknown>} step @param {Promise<void>} stop */
async function churn(step, stop) {
  let done = false;
  stop.then(() => (done = true));
  while (!done) await attempt(step);
}

/** @template T @param {T[]} list @returns {T} */
const pick = (list) => list[Math.floor(Math.random() * list.length)];

const NEXT = /** @type {Record<string, string>} */ ({ pending: "paid", paid: "shipped", shipped: "delivered" });

for (const backend of backends()) {
  describe(`${backend}: live lists`, () => {
    it("orders, all and by status, equal the database after a load raced by writers", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const viewer = await server.client("staff", { transport: "websocket" });
      t.after(() => viewer.close());
      const buyers = [await server.client("customer"), await server.client("customer")];
      const products = [await product(staff), await product(staff), await product(staff)];
      /** @type {string[]} */
      const orders = [];
      const order = async () => {
        const made = await pick(buyers).post("/v1/orders", { items: [{ product_id: pick(products).id, quantity: 1 }] });
        orders.push(made.id);
      };
      const move = async () => {
        const id = pick(orders);
        const { status } = await staff.get(`/v1/orders/${id}`);
        if (Math.random() < 0.15 && (status === "pending" || status === "paid")) await staff.post(`/v1/orders/${id}/cancel`);
        else if (NEXT[status]) await staff.post(`/v1/orders/${id}/status`, { status: NEXT[status] });
      };
      for (let i = 0; i < 20; i++) await order();

      for (let round = 0; round < ROUNDS; round++) {
        /** @type {() => void} */
        let finish = () => {};
        const stop = new Promise((ok) => (finish = () => ok(undefined)));
        const writers = Promise.all([churn(order, stop), churn(move, stop), churn(move, stop)]);
        const all = viewer.live.list("orders", { limit: 5 });
        const paid = viewer.live.list("orders", { status: "paid", limit: 3 });
        await Promise.all([all.ready, paid.ready]);
        // Writers go on a while after the load, then stop.
        for (let i = 0; i < 10; i++) await attempt(move);
        finish();
        await writers;

        await equals(all, await everything(staff, "/v1/orders", {}));
        await equals(paid, await everything(staff, "/v1/orders", { status: "paid" }));
        all.close();
        paid.close();
      }
    });

    it("products in stock, sorted by stock, equal the database after a load raced by writers", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const viewer = await server.client("customer", { transport: "websocket" });
      t.after(() => viewer.close());
      /** @type {string[]} */
      const ids = [];
      for (let i = 0; i < 12; i++) ids.push((await product(staff, { stock: i % 3 })).id);
      const step = async () => {
        const id = pick(ids);
        const roll = Math.random();
        if (roll < 0.6) {
          // Stock moves across zero: products enter and leave the in-stock list.
          const { stock } = await staff.get(`/v1/products/${id}`);
          await staff.post(`/v1/products/${id}/stock-adjustments`, { delta: stock > 0 && Math.random() < 0.5 ? -stock : 2, reason: "count" });
        } else if (roll < 0.8) await staff.patch(`/v1/products/${id}`, { name: `Renamed ${Math.random()}` });
        else if (roll < 0.9) await staff.delete(`/v1/products/${id}`).catch(() => {});
        else await staff.post(`/v1/products/${id}/restore`).catch(() => {});
      };

      for (let round = 0; round < ROUNDS; round++) {
        /** @type {() => void} */
        let finish = () => {};
        const stop = new Promise((ok) => (finish = () => ok(undefined)));
        const writers = Promise.all([churn(step, stop), churn(step, stop)]);
        const query = { in_stock: true, sort: "-stock", limit: 4 };
        const list = viewer.live.list("products", query);
        await list.ready;
        for (let i = 0; i < 10; i++) await attempt(step);
        finish();
        await writers;
        // inventory.stock_changed carries the new stock and version, not updated_at.
        await equals(list, await everything(staff, "/v1/products", query), ["updated_at"]);
        list.close();
      }
    });

    it("unread notifications equal the database while they are created, read and deleted", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const buyer = await server.client("customer", { transport: "websocket" });
      t.after(() => buyer.close());
      const { id: productId } = await product(staff);
      /** @type {string[]} */
      const orders = [];
      for (let i = 0; i < 8; i++) orders.push((await buyer.post("/v1/orders", { items: [{ product_id: productId, quantity: 1 }] })).id);
      const notify = async () => {
        const id = pick(orders);
        const { status } = await staff.get(`/v1/orders/${id}`);
        if (NEXT[status]) await staff.post(`/v1/orders/${id}/status`, { status: NEXT[status] });
        else orders.push((await buyer.post("/v1/orders", { items: [{ product_id: productId, quantity: 1 }] })).id);
      };
      const read = async () => {
        const { items } = await buyer.get("/v1/notifications?unread=true&limit=5");
        if (!items.length) return;
        const roll = Math.random();
        if (roll < 0.1) await buyer.post("/v1/notifications/read-all");
        else if (roll < 0.3) await buyer.delete(`/v1/notifications/${pick(items).id}`).catch(() => {});
        else await buyer.post(`/v1/notifications/${pick(items).id}/read`);
      };
      for (let i = 0; i < 10; i++) await attempt(notify);

      for (let round = 0; round < ROUNDS; round++) {
        /** @type {() => void} */
        let finish = () => {};
        const stop = new Promise((ok) => (finish = () => ok(undefined)));
        const writers = Promise.all([churn(notify, stop), churn(notify, stop), churn(read, stop)]);
        const list = buyer.live.list("notifications", { unread: true, limit: 3 });
        await list.ready;
        for (let i = 0; i < 10; i++) await attempt(notify);
        finish();
        await writers;
        await equals(list, await everything(buyer, "/v1/notifications", { unread: "true" }));
        list.close();
      }
    });
  });
}
