// The SDK in real Chromium, loaded from src/ by a plain <script type="module">: two tabs of
// one origin share a session through IndexedDB and refresh it under the Web Locks API,
// with no grace window on the server, while both stay live; and the browser example works.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { extname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium } from "playwright-core";
import { Server, backends, product, freePort, PASSWORD } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const root = new URL("..", import.meta.url);
const types = /** @type {Record<string, string>} */ ({ ".html": "text/html", ".js": "text/javascript" });

/** Serves clients/js/ as static files, as any web server would. @param {number} port */
async function serveFiles(port) {
  const server = createServer(async (req, res) => {
    const path = new URL(`.${new URL(String(req.url), "http://x").pathname}`, root).pathname;
    try {
      if (!path.startsWith(root.pathname)) throw new Error("outside");
      const body = await readFile(path);
      res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(port, "127.0.0.1", () => ok(undefined)));
  return server;
}

for (const backend of backends()) {
  describe(`${backend}: browser`, () => {
    it("two tabs share one session (IndexedDB), refresh it in turn under a lock and both stay live", async (t) => {
      assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium)`);
      const port = await freePort();
      const origin = `http://127.0.0.1:${port}`;
      const files = await serveFiles(port);
      t.after(() => new Promise((ok) => files.close(ok)));
      const server = await Server.start(backend, {
        TIDINGS_CORS_ORIGINS: origin,
        TIDINGS_REFRESH_REUSE_GRACE: "0",
        TIDINGS_ACCESS_TOKEN_TTL: "3s",
      });
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const { email } = await server.client("customer");
      const { id } = await product(staff);

      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
      t.after(() => browser.close());
      const context = await browser.newContext();
      const tabs = [await context.newPage(), await context.newPage()];
      /** @type {string[]} */
      const errors = [];
      for (const tab of tabs) {
        tab.on("pageerror", (e) => errors.push(e.message));
        await tab.goto(`${origin}/test/browser/tab.html`);
        await tab.waitForFunction(() => document.title === "ready");
      }
      // Each tab: a client on the shared store; the first signs in, the second finds the session.
      const open = async (/** @type {import("playwright-core").Page} */ tab, /** @type {boolean} */ signIn) =>
        tab.evaluate(
          async ({ baseUrl, email, password, signIn }) => {
            const w = /** @type {any} */ (window);
            const { Tidings, IndexedDbStore } = w.sdk;
            w.states = [];
            w.log = [];
            w.rotations = 0;
            w.stocks = [];
            const tidings = new Tidings({
              baseUrl,
              store: new IndexedDbStore("shop"),
              onTokens: () => w.rotations++,
              backoff: { initialMs: 50, maxMs: 1000 },
            });
            w.tidings = tidings;
            if (signIn) await tidings.login(email, password);
            await tidings.ready;
            tidings.onStatus((/** @type {any} */ s) => (w.states.push(s.state), w.log.push(`${(performance.now() / 1000).toFixed(2)} ${s.state} ${s.error}`)));
            tidings.subscribe("inventory", (/** @type {any} */ e) => e.type === "inventory.stock_changed" && w.stocks.push(e.data.stock));
            await new Promise((ok) => tidings.onStatus((/** @type {any} */ s) => s.state === "live" && ok(undefined)));
            return Boolean(navigator.locks);
          },
          { baseUrl: server.url, email, password: PASSWORD, signIn },
        );
      assert.equal(await open(tabs[0], true), true, "the Web Locks API is there");
      await open(tabs[1], false);

      // Three token lifetimes: both tabs' timers fire together each time.
      for (let i = 1; i <= 3; i++) {
        await sleep(3000);
        await staff.post(`/v1/products/${id}/stock-adjustments`, { delta: 1, reason: "restock" });
        for (const tab of tabs)
          await tab.waitForFunction((n) => /** @type {any} */ (window).stocks.length === n, i, { timeout: 60000 }).catch(async (e) => {
            const seen = await Promise.all(tabs.map((t) => t.evaluate(() => {
              const w = /** @type {any} */ (window);
              return { states: w.states, stocks: w.stocks, status: w.tidings.status, log: w.log };
            })));
            throw new Error(`${e.message}: ${JSON.stringify(seen)}`);
          });
      }
      for (const tab of tabs) {
        const seen = await tab.evaluate(async () => {
          const w = /** @type {any} */ (window);
          return { states: w.states, stocks: w.stocks, rotations: w.rotations, me: (await w.tidings.get("/v1/me")).email };
        });
        assert.deepEqual(seen.stocks, [1001, 1002, 1003]);
        assert.equal(seen.me, email);
        assert.ok(seen.rotations >= 3, `rotations: ${seen.rotations}`);
        assert.ok(!seen.states.includes("stopped"), `states: ${seen.states}`);
      }
      assert.deepEqual(errors, []);
    });

    it("the browser example signs in, shows an order placed elsewhere live, and keeps the session on reload", async (t) => {
      assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium)`);
      const port = await freePort();
      const origin = `http://127.0.0.1:${port}`;
      const files = await serveFiles(port);
      t.after(() => new Promise((ok) => files.close(ok)));
      const server = await Server.start(backend, { TIDINGS_CORS_ORIGINS: origin });
      t.after(() => server.stop());
      const staff = await server.client("staff");
      const { id } = await product(staff);

      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
      t.after(() => browser.close());
      const page = await browser.newPage();
      /** @type {string[]} */
      const errors = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`${origin}/examples/browser.html`);
      await page.getByLabel("Server").fill(server.url);
      await page.getByLabel("Email").fill(staff.email);
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Sign in" }).click();
      const live = () => page.waitForFunction(() => document.querySelector("#status")?.textContent?.startsWith("live"));
      await live();

      const order = await staff.post("/v1/orders", { items: [{ product_id: id, quantity: 2 }] });
      const item = page.getByRole("listitem").filter({ hasText: order.id.slice(-6) });
      await item.filter({ hasText: "pending" }).waitFor();
      await staff.post(`/v1/orders/${order.id}/status`, { status: "paid" });
      await item.filter({ hasText: "paid" }).waitFor();

      await page.reload();
      await live();
      await item.filter({ hasText: "paid" }).waitFor();
      assert.deepEqual(errors, []);
    });
  });
}
