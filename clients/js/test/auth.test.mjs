// Tokens against a real server: rotation by clients sharing a store (as tabs share
// localStorage) never spends a refresh token twice, so the family is never revoked.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Server, backends, PASSWORD } from "./helpers.mjs";
import { Tidings, MemoryStore, TidingsError } from "../src/index.js";
import WebSocket from "ws";

for (const backend of backends()) {
  describe(`${backend}: tokens`, () => {
    it("two clients sharing a store refresh at once, again and again, and the session survives", async (t) => {
      // No grace window: a refresh token presented twice would revoke the family at once.
      const server = await Server.start(backend, { TIDINGS_REFRESH_REUSE_GRACE: "0" });
      t.after(() => server.stop());
      const { email } = await server.client("customer");
      const store = new MemoryStore();
      const one = new Tidings({ baseUrl: server.url, store, WebSocket });
      await one.login(email, PASSWORD);
      const two = new Tidings({ baseUrl: server.url, store, WebSocket });
      await two.ready;
      assert.equal(two.tokens?.refresh_token, one.tokens?.refresh_token, "the second client took the stored pair");

      const seen = new Set();
      for (let round = 0; round < 5; round++) {
        await Promise.all([one.refresh(), two.refresh(), one.refresh(), two.refresh()]);
        seen.add(one.tokens?.refresh_token);
        assert.equal(one.tokens?.refresh_token, two.tokens?.refresh_token, "both hold the newest pair");
      }
      assert.equal(seen.size, 5, "each round rotated the token once");
      assert.equal((await one.get("/v1/me")).email, email);
      assert.equal((await two.get("/v1/me")).email, email);

      // The server agrees that the family is alive: the newest token still refreshes.
      const res = await fetch(`${server.url}/v1/auth/refresh`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: one.tokens?.refresh_token }),
      });
      assert.equal(res.status, 200);
    });

    it("a client whose refresh token was revoked stops its live connection and says why", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const user = await server.client("customer", { transport: "websocket" });
      t.after(() => user.close());
      /** @type {Array<unknown>} */
      const pairs = [];
      user.onTokens = (pair) => pairs.push(pair);
      user.subscribe("orders", () => {});
      await new Promise((ok) => user.onStatus((s) => s.state === "live" && ok(undefined)));
      const stopped = new Promise((ok) => user.onStatus((s) => s.state === "stopped" && ok(s)));
      await user.post("/v1/auth/logout-all");
      const status = /** @type {import("../src/index.js").Status} */ (await stopped);
      assert.equal(status.error, "signed out");
      assert.equal(user.tokens, null);
      assert.deepEqual(pairs, [null]);
      await assert.rejects(user.get("/v1/me"), (e) => e instanceof TidingsError && e.status === 401);
    });

    it("a subscription made before signing in waits, stopped, and goes live once signed in", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const { email } = await server.client("customer");
      const tidings = new Tidings({ baseUrl: server.url, WebSocket });
      t.after(() => tidings.close());
      const stopped = new Promise((ok) => tidings.onStatus((s) => s.state === "stopped" && ok(s.error)));
      tidings.subscribe("orders", () => {});
      assert.equal(await stopped, "signed out");
      const live = new Promise((ok) => tidings.onStatus((s) => s.state === "live" && ok(undefined)));
      await tidings.login(email, PASSWORD);
      await live;
    });

    it("turns a problem+json into a TidingsError with its code", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const user = await server.client("customer");
      await assert.rejects(user.post("/v1/orders", { items: [] }), (e) => {
        assert.ok(e instanceof TidingsError);
        assert.equal(e.status, 422);
        assert.equal(e.code, "validation_failed");
        return true;
      });
    });
  });
}
