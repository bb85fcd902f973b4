// Live delivery against a real server: every event once and in order across cut
// connections, close codes, token expiry, restarts, retention and the transports.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { Server, Proxy, Inbox, backends, product, status, METRICS_TOKEN } from "./helpers.mjs";
import { Tidings, MemoryStore } from "../src/index.js";
import WebSocket from "ws";

/** N stock adjustments of `id` by `staff`: N inventory.stock_changed events. @param {Tidings} staff @param {string} id @param {number} n */
async function adjust(staff, id, n) {
  for (let i = 0; i < n; i++) await staff.post(`/v1/products/${id}/stock-adjustments`, { delta: 1, reason: "restock" });
}

/**
 * The stock_changed events of one product.
 * @param {Inbox} inbox @param {string} id
 * @returns {import("../src/index.js").StockChanged[]}
 */
const stockOf = (inbox, id) =>
  inbox.events.flatMap((e) => (e.type === "inventory.stock_changed" && e.data.product_id === id ? [e] : []));

for (const backend of backends()) {
  describe(`${backend}: live`, () => {
    for (const transport of /** @type {const} */ (["websocket", "sse"])) {
      it(`resumes over ${transport} after the connection is cut, with every event once and the catch-up counted`, async (t) => {
        const server = await Server.start(backend);
        t.after(() => server.stop());
        const proxy = await Proxy.start(server.port);
        t.after(() => proxy.close());
        const staff = await server.client("staff");
        const shopper = await server.client("customer", { baseUrl: proxy.url, transport });
        t.after(() => shopper.close());
        const { id } = await product(staff);

        const inbox = new Inbox();
        shopper.subscribe("inventory", inbox.handler);
        await status(shopper, (s) => s.state === "live", "live");
        await adjust(staff, id, 3);
        await inbox.wait(() => stockOf(inbox, id).length === 3, "3 live events");

        proxy.hold();
        proxy.cut();
        await status(shopper, (s) => s.state === "reconnecting", "reconnecting");
        await adjust(staff, id, 5);
        proxy.release();
        await status(shopper, (s) => s.state === "live", "live again");
        await inbox.wait(() => stockOf(inbox, id).length === 8, "8 events");

        inbox.seqs();
        assert.deepEqual(
          stockOf(inbox, id).map((e) => e.data.stock),
          [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008],
        );
        if (transport === "websocket") assert.equal(shopper.status.caughtUp, 5);
        assert.equal(shopper.status.transport, transport);
      });
    }

    it("resumes after the server closes the socket (4001, a role change): refresh, reconnect, replay", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const proxy = await Proxy.start(server.port);
      t.after(() => proxy.close());
      const admin = await server.client("admin");
      const staff = await server.client("staff");
      const user = await server.client("customer", { baseUrl: proxy.url, transport: "websocket" });
      t.after(() => user.close());
      const { id } = await product(staff);
      const inbox = new Inbox();
      user.subscribe("inventory", inbox.handler);
      await status(user, (s) => s.state === "live", "live");
      await adjust(staff, id, 2);
      await inbox.wait(() => stockOf(inbox, id).length === 2, "2 events");

      proxy.hold();
      await admin.patch(`/v1/users/${user.me?.sub}`, { role: "staff" });
      await status(user, (s) => s.state === "reconnecting", "the server's close");
      await adjust(staff, id, 4);
      proxy.cut();
      proxy.release();
      await status(user, (s) => s.state === "live", "live again");
      await inbox.wait(() => stockOf(inbox, id).length === 6, "6 events");

      inbox.seqs();
      assert.equal(user.me?.role, "staff", "the refreshed token carries the new role");
      assert.equal(user.status.caughtUp, 4);
    });

    for (const transport of /** @type {const} */ (["websocket", "sse"]))
    it(`resumes over ${transport} after 4008: a consumer that stopped reading is closed and catches up`, async (t) => {
      const server = await Server.start(backend, { TIDINGS_QUEUE_BYTES: "4096", TIDINGS_LIVE_SEND_BUFFER: "4096" });
      t.after(() => server.stop());
      const proxy = await Proxy.start(server.port);
      t.after(() => proxy.close());
      const staff = await server.client("staff");
      const user = await server.client("customer", { baseUrl: proxy.url, transport });
      t.after(() => user.close());
      const { id } = await product(staff);
      const inbox = new Inbox();
      user.subscribe("inventory", inbox.handler);
      await status(user, (s) => s.state === "live", "live");
      /** @type {string[]} */
      const states = [];
      user.onStatus((s) => states.push(s.state));

      proxy.stall();
      const slow = async () => {
        const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).text();
        return Number(/^tidings_hub_slow_consumers_total (\d+)/m.exec(text)?.[1] ?? 0);
      };
      // Big events (a 5,000-character description each) until the server gives up on it.
      let changes = 0;
      while ((await slow()) === 0) {
        await staff.patch(`/v1/products/${id}`, { description: `${changes++}`.padEnd(5000, ".") });
        assert.ok(changes < 2000, "the server never closed the stalled connection");
      }
      proxy.unstall();
      await adjust(staff, id, 1);
      await inbox.wait((events) => events.some((e) => e.type === "inventory.stock_changed"), "the event after");

      const updates = inbox.events.filter((e) => e.type === "product.updated");
      inbox.seqs();
      assert.equal(updates.length, changes, "every update, once");
      assert.ok(states.includes("reconnecting"), "it reconnected");
    });

    it("keeps its WebSocket across token expiries by refreshing in band", async (t) => {
      const server = await Server.start(backend, { TIDINGS_ACCESS_TOKEN_TTL: "3s" });
      t.after(() => server.stop());
      const staff = await server.client("staff");
      let rotations = 0;
      const user = await server.client("customer", { transport: "websocket", onTokens: () => rotations++ });
      t.after(() => user.close());
      const { id } = await product(staff);
      const inbox = new Inbox();
      user.subscribe("inventory", inbox.handler);
      await status(user, (s) => s.state === "live", "live");
      /** @type {string[]} */
      const states = [];
      user.onStatus((s) => states.push(s.state));
      const first = rotations;

      // Three token lifetimes, with an event in each.
      for (let i = 1; i <= 3; i++) {
        await sleep(3000);
        await adjust(staff, id, 1);
        await inbox.wait(() => stockOf(inbox, id).length === i, `event ${i}`);
      }
      assert.ok(rotations - first >= 3, `refreshed ${rotations - first} times`);
      assert.deepEqual(states, [], "the connection never dropped");
    });

    it("resumes its event stream after each token expiry, missing nothing", async (t) => {
      const server = await Server.start(backend, { TIDINGS_ACCESS_TOKEN_TTL: "3s" });
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const user = await server.client("customer", { transport: "sse" });
      t.after(() => user.close());
      const { id } = await product(staff);
      const inbox = new Inbox();
      user.subscribe("inventory", inbox.handler);
      await status(user, (s) => s.state === "live", "live");
      /** @type {string[]} */
      const states = [];
      user.onStatus((s) => states.push(s.state));
      // Changes all along three token lifetimes; the server ends the stream at each expiry.
      const started = Date.now();
      let changes = 0;
      while (Date.now() - started < 9000) {
        await adjust(staff, id, 1);
        changes++;
      }
      await inbox.wait(() => stockOf(inbox, id).length === changes, `${changes} events`);
      inbox.seqs();
      assert.ok(states.includes("reconnecting"), "the stream ended at an expiry and was resumed");
    });

    it("resumes after the server restarts on the same port, with what changed while it was down", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const user = await server.client("customer", { transport: "websocket" });
      t.after(() => user.close());
      const { id } = await product(staff);
      const inbox = new Inbox();
      user.subscribe("inventory", inbox.handler);
      await status(user, (s) => s.state === "live", "live");
      await adjust(staff, id, 1);
      await inbox.wait(() => stockOf(inbox, id).length === 1, "1 event");

      await server.halt();
      await status(user, (s) => s.state === "reconnecting", "reconnecting");
      // Meanwhile another instance on the same database takes changes.
      const other = await server.sibling();
      const elsewhere = await other.signIn(staff.email);
      await adjust(elsewhere, id, 3);
      await elsewhere.close();
      await other.halt();

      await server.launch();
      await status(user, (s) => s.state === "live", "live again");
      await inbox.wait(() => stockOf(inbox, id).length === 4, "4 events");
      inbox.seqs();
      assert.equal(user.status.caughtUp, 3);
    });

    it("calls onReset when the server no longer has the events after the cursor (retention)", async (t) => {
      const server = await Server.start(backend, { TIDINGS_EVENT_RETENTION: "1s" });
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const { id } = await product(staff);
      const store = new MemoryStore();
      const first = await server.signIn((await server.client("customer")).email, { store });
      const inbox = new Inbox();
      first.subscribe("inventory", inbox.handler);
      await status(first, (s) => s.state === "live", "live");
      await adjust(staff, id, 1);
      await inbox.wait(() => inbox.events.length === 1, "1 event");
      await first.close();
      assert.ok(Number(store.get("cursor:inventory")) >= inbox.events[0].seq, "the cursor is saved");

      await adjust(staff, id, 2);
      await sleep(1100); // the events must age past the retention window
      await server.halt();
      const pruned = server.waitForLog(/pruned events past the retention window/);
      await server.launch();
      await pruned;

      const again = new Tidings({ baseUrl: server.url, WebSocket, store, backoff: { initialMs: 50, maxMs: 1000 } });
      t.after(() => again.close());
      /** @type {string[][]} */
      const resets = [];
      const after = new Inbox();
      again.subscribe("inventory", after.handler, { onReset: (topics) => resets.push(topics) });
      await status(again, (s) => s.state === "live", "live");
      assert.deepEqual(resets, [["inventory"]]);
      await adjust(staff, id, 1);
      await after.wait((events) => events.length === 1, "the event after the reset");
      assert.equal(stockOf(after, id)[0].data.stock, 1004);
    });

    it("falls back to SSE when WebSockets are blocked (auto)", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const proxy = await Proxy.start(server.port);
      proxy.blockWebSockets = true;
      t.after(() => proxy.close());
      const staff = await server.client("staff");
      const user = await server.client("customer", { baseUrl: proxy.url });
      t.after(() => user.close());
      const { id } = await product(staff);
      const inbox = new Inbox();
      user.subscribe(["inventory", "orders"], inbox.handler);
      await status(user, (s) => s.state === "live", "live");
      assert.equal(user.status.transport, "sse");
      await adjust(staff, id, 2);
      await inbox.wait(() => stockOf(inbox, id).length === 2, "2 events");
    });

    it("backs off on 4029 and connects once the user's other connection closes", async (t) => {
      const server = await Server.start(backend, { TIDINGS_MAX_CONNECTIONS_PER_USER: "1" });
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const one = await server.client("customer", { transport: "websocket" });
      t.after(() => one.close());
      const two = await server.signIn(one.email, { transport: "websocket" });
      t.after(() => two.close());
      const { id } = await product(staff);
      one.subscribe("inventory", () => {});
      await status(one, (s) => s.state === "live", "the first live");
      const inbox = new Inbox();
      two.subscribe("inventory", inbox.handler);
      await status(two, (s) => /^4029/.test(s.error ?? ""), "the second refused");
      await adjust(staff, id, 1);
      await one.close();
      await status(two, (s) => s.state === "live", "the second live");
      await adjust(staff, id, 1);
      await inbox.wait(() => stockOf(inbox, id).length >= 1, "an event");
      inbox.seqs();
    });

    it("replays for a late subscription in order though the old subscription's events are still arriving", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const proxy = await Proxy.start(server.port);
      t.after(() => proxy.close());
      const staff = await server.client("staff");
      const user = await server.client("customer", { baseUrl: proxy.url, transport: "websocket" });
      t.after(() => user.close());
      const { id } = await product(staff);
      const early = new Inbox();
      user.subscribe("inventory", early.handler);
      await status(user, (s) => s.state === "live", "live");
      await adjust(staff, id, 2);
      await early.wait(() => early.events.length === 2, "2 events");

      // Three more are on their way (held in the network) when a subscription from before
      // the first asks for its replay.
      proxy.stall();
      await adjust(staff, id, 3);
      const late = new Inbox();
      const sub = user.subscribe("inventory", late.handler, { since: early.events[0].seq - 1 });
      await sub.ready;
      proxy.unstall();
      await early.wait(() => early.events.length === 5, "5 events");
      await late.wait(() => late.events.length === 5, "the replay of all 5");
      late.seqs();
      assert.deepEqual(late.events.map((e) => e.seq), early.events.map((e) => e.seq));
    });

    it("adds and drops topics on one connection, replaying what a late subscription asks for", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const user = await server.client("customer", { transport: "websocket" });
      t.after(() => user.close());
      const { id } = await product(staff);
      const early = new Inbox();
      user.subscribe("inventory", early.handler);
      await status(user, (s) => s.state === "live", "live");
      await adjust(staff, id, 3);
      await early.wait(() => early.events.length === 3, "3 events");

      // A second subscription from before those events: replayed for it alone.
      const late = new Inbox();
      user.subscribe(["inventory", "orders"], late.handler, { since: early.events[0].seq - 1 });
      await late.wait(() => late.events.length === 3, "the replay");
      await adjust(staff, id, 1);
      await late.wait(() => late.events.length === 4, "the live event");
      await early.wait(() => early.events.length === 4, "the live event, once");
      early.seqs();
      late.seqs();
      assert.deepEqual(late.events.map((e) => e.seq), early.events.map((e) => e.seq));
    });

    for (const transport of /** @type {const} */ (["websocket", "sse"]))
    it(`acknowledges over ${transport} what the handlers finished, so the user is not pushed it`, async (t) => {
      const server = await Server.start(backend, { TIDINGS_PUSH_DELAY: "3s" });
      t.after(() => server.stop());
      const admin = await server.client("admin");
      const user = await server.client("customer", { transport });
      t.after(() => user.close());
      const inbox = new Inbox();
      user.subscribe("notifications", inbox.handler);
      await status(user, (s) => s.state === "live", "live");
      const id = user.me?.sub;
      await admin.post("/v1/notifications/broadcast", { title: "Seen", body: "Handled live.", audience: [id] });
      await inbox.wait(() => inbox.events.some((e) => e.type === "notification.created"), "the notification");

      // The worker decides once the delay has passed: acknowledged, so nothing is pushed.
      /** @type {any} */
      let item;
      for (const started = Date.now(); ; ) {
        const log = /** @type {any} */ (await admin.get(`/v1/admin/deliveries?user=${id}`));
        item = log.items[0];
        if (item && item.state !== "waiting") break;
        assert.ok(Date.now() - started < 20000, "the worker decided in time");
        await sleep(50);
      }
      assert.equal(item.state, "acked");
    });
  });
}
