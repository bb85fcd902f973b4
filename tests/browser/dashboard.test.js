// The dashboard in a real browser (Debian's Chromium, driven by playwright-core) against
// real Tidings servers, each started by its test on a database of its own, on SQLite and
// on PostgreSQL + Redis. Nothing is mocked: changes are made over REST, as another client
// would make them, and the page must show them as they happen.
//
//   npm test                         both backends (TEST_DATABASE_URL, TEST_REDIS_URL)
//   BROWSER_BACKENDS=sqlite npm test  SQLite alone
//   UPDATE_SCREENSHOT=1 npm test      also rewrites docs/dashboard.png (the README's)

import assert from "node:assert/strict";
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { PushService } from "./pushservice.js";
import { ARTIFACTS, PASSWORD, REPO, backends, startServer } from "./server.js";
import { SmtpServer } from "./smtp.js";

/** Debian's Chromium; Playwright never downloads a browser of its own here. */
const CHROMIUM = "/usr/bin/chromium";
const COLUMNS = ["pending", "paid", "shipped", "delivered"];
const require = createRequire(import.meta.url);
const AXE = await readFile(require.resolve("axe-core/axe.min.js"), "utf8");

/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  await mkdir(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

/**
 * A server for one test, stopped (and its database dropped) when the test ends.
 * @param {import("node:test").TestContext} t
 * @param {import("./server.js").Backend} backend
 * @param {import("./server.js").ServerOptions} [options]
 */
async function serverFor(t, backend, options = {}) {
  const label = `${backend.name}-${t.name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60)}`;
  const server = await startServer(backend, label, options);
  t.after(() => server.stop());
  return server;
}

/**
 * The server settings of the push tests: the push service is on 127.0.0.1, and a user's
 * notification goes to push a second after nobody acknowledged it.
 */
const PUSH_SETTINGS = { TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS: "true", TIDINGS_PUSH_DELAY: "1s" };

/**
 * A push service of the test's for `server`, stopped when the test ends; it fails the test
 * if any request it got failed its checks.
 * @param {import("node:test").TestContext} t
 * @param {import("./server.js").Server} server
 */
async function pushServiceFor(t, server) {
  const { public_key: vapidKey } = await server.api("GET", "/v1/push/vapid-public-key");
  const service = await new PushService(vapidKey).start();
  t.after(async () => {
    await service.stop();
    assert.deepEqual(service.errors, [], "every push request passed the push service's checks");
  });
  return service;
}

/**
 * An init script that gives the page's `PushManager` the test's push service: Chromium's
 * own `subscribe` asks Google's service, out of reach here. A subscription is kept in
 * localStorage, as a browser keeps it across reloads; `__pushOptions` records what the page
 * subscribed with.
 * @param {ReturnType<PushService["subscription"]>} subscription
 */
function usePushService(subscription) {
  if (!("PushManager" in globalThis)) return;
  const KEY = "test:push-subscription";
  const stored = () => {
    try {
      return localStorage.getItem(KEY) === "1";
    } catch {
      return false; // an opaque origin (about:blank)
    }
  };
  const make = () => ({
    endpoint: subscription.endpoint,
    expirationTime: null,
    options: { userVisibleOnly: true },
    toJSON: () => subscription,
    unsubscribe: async () => {
      localStorage.removeItem(KEY);
      return true;
    },
  });
  PushManager.prototype.subscribe = async function (options) {
    /** @type {any} */ (globalThis).__pushOptions = options;
    localStorage.setItem(KEY, "1");
    return /** @type {any} */ (make());
  };
  PushManager.prototype.getSubscription = async function () {
    return stored() ? /** @type {any} */ (make()) : null;
  };
}

/**
 * A mail server of the test's, stopped when the test ends, and a server that mails through
 * it links to itself (`TIDINGS_PUBLIC_URL` is its own address).
 * @param {import("node:test").TestContext} t
 * @param {import("./server.js").Backend} backend
 */
async function serverWithMail(t, backend) {
  const smtp = await new SmtpServer().start();
  t.after(() => smtp.stop());
  const server = await serverFor(t, backend, {
    publicUrl: true,
    env: { TIDINGS_SMTP_URL: /** @type {string} */ (smtp.url), TIDINGS_MAIL_FROM: "Tidings <no-reply@example.com>" },
  });
  return { server, smtp };
}

/**
 * The dashboard link of `route` in a mail, in its text and, the same, in its HTML.
 * @param {import("./smtp.js").Mail} mail
 * @param {string} origin
 * @param {"reset" | "verify"} route
 */
function linkIn(mail, origin, route) {
  const pattern = new RegExp(`${origin.replace(/[.]/g, "\\.")}/app/#/${route}\\?token=[A-Za-z0-9_-]+`);
  const link = pattern.exec(mail.text)?.[0];
  assert.ok(link, `a ${route} link to ${origin} in: ${mail.text}`);
  assert.ok(mail.html.includes(link), "the HTML has the same link");
  return link;
}

/**
 * A page in a fresh browser context (its own storage), closed when the test ends.
 * @param {import("node:test").TestContext} t
 * @param {import("playwright-core").BrowserContextOptions} [options]
 */
async function pageFor(t, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...options });
  t.after(() => context.close());
  const page = await context.newPage();
  /** @type {string[]} */
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  t.after(() => {
    // Failed requests while offline are the network's, not the page's.
    const own = errors.filter((e) => !/ERR_INTERNET_DISCONNECTED|Failed to load resource|WebSocket connection/.test(e));
    assert.deepEqual(own, [], "the page logged no error");
  });
  return { context, page };
}

/**
 * Signs in through the form and waits for the live connection.
 * @param {import("playwright-core").Page} page
 * @param {import("./server.js").Server} server
 * @param {string} email
 */
async function signIn(page, server, email) {
  await page.goto(`${server.origin}/app/`);
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await waitLive(page);
}

/** @param {import("playwright-core").Page} page */
async function waitLive(page) {
  await page.locator('#connection[data-state="live"]').waitFor();
}

/**
 * The ids of the orders in each column of the board, as shown.
 * @param {import("playwright-core").Page} page
 * @returns {Promise<Record<string, string[]>>}
 */
function boardOf(page) {
  return page.evaluate((columns) => Object.fromEntries(columns.map((status) => [status,
    [...document.querySelectorAll(`.column[data-status="${status}"] [data-order-id]`)]
      .map((card) => /** @type {string} */ (card.getAttribute("data-order-id")))])), COLUMNS);
}

/**
 * The same from the API: what the database holds.
 * @param {import("./server.js").Server} server
 * @param {string} token
 */
async function boardFromApi(server, token) {
  const { items } = await server.api("GET", "/v1/orders?limit=100", { token });
  return Object.fromEntries(COLUMNS.map((status) => [status,
    items.filter((/** @type {any} */ o) => o.status === status).map((/** @type {any} */ o) => o.id)]));
}

/** @param {Record<string, string[]>} board */
const sorted = (board) => Object.fromEntries(Object.entries(board).map(([k, v]) => [k, [...v].sort()]));

/**
 * Places an order of one unit of each product named by SKU, as `token`.
 * @param {import("./server.js").Server} server
 * @param {string} token
 * @param {string[]} skus
 */
async function placeOrder(server, token, skus) {
  const { items: products } = await server.api("GET", "/v1/products?limit=100", { token });
  const items = skus.map((sku) => ({
    product_id: products.find((/** @type {any} */ p) => p.sku === sku).id, quantity: 1,
  }));
  return server.api("POST", "/v1/orders", { token, body: { items } });
}

/**
 * Runs axe on the page as it is and fails on any violation.
 * @param {import("playwright-core").Page} page
 * @param {string} what
 */
async function assertAccessible(page, what) {
  // Through the DevTools protocol, as the page's own policy lets no other script in.
  const results = await page.evaluate(`(async () => { ${AXE}; return axe.run(document, {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } }); })()`);
  const violations = /** @type {any} */ (results).violations.map((/** @type {any} */ v) =>
    `${v.id}: ${v.help} (${v.nodes.map((/** @type {any} */ n) => n.target.join(" ")).join(", ")})`);
  assert.deepEqual(violations, [], `axe finds no violation on ${what}`);
}

for (const backend of backends()) {
  describe(`the dashboard on ${backend.name}`, () => {
    test("a staff member signs in and sees the board, the stock and the bell", async (t) => {
      const server = await serverFor(t, backend);
      const { page } = await pageFor(t);

      await signIn(page, server, "staff@example.com");

      await page.getByRole("heading", { name: "Orders", level: 1 }).waitFor();
      const staff = await server.token("staff@example.com");
      const expected = await boardFromApi(server, staff);
      await page.waitForFunction((count) => document.querySelectorAll("#board [data-order-id]").length === count,
        Object.values(expected).flat().length);
      assert.deepEqual(sorted(await boardOf(page)), sorted(expected), "the board shows the orders the API lists");
      assert.equal(await page.locator("#stock-rows tr").count(), 16, "the seeded catalog");
      assert.match(await page.locator("#who-email").textContent() ?? "", /staff@example\.com/);
      assert.equal(await page.locator("#connection .text").textContent(), "Live");
      assert.equal(await page.locator("#connection").getAttribute("title"), "over WebSocket",
        "the page's policy lets the WebSocket to its own origin through");

      // A reload keeps the session (the SDK's store) and signs nobody out.
      await page.reload();
      await waitLive(page);
      await page.getByRole("heading", { name: "Orders", level: 1 }).waitFor();

      await page.getByRole("button", { name: "Sign out" }).click();
      await page.getByRole("heading", { name: "Sign in" }).waitFor();
      assert.equal(await page.evaluate(() => localStorage.getItem("tidings:tokens")), null, "signing out forgets the tokens");
      assert.equal(await page.locator("#sign-in-error").textContent(), "", "a sign-out is not taken for an ended session");
    });

    test("a wrong password is refused on the form", async (t) => {
      const server = await serverFor(t, backend);
      const { page } = await pageFor(t);
      await page.goto(`${server.origin}/app/`);
      await page.getByLabel("Email", { exact: true }).fill("staff@example.com");
      await page.getByLabel("Password", { exact: true }).fill("not the password");
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("alert").filter({ hasText: "do not match" }).waitFor();
      assert.equal(await page.locator("#staff").isVisible(), false);
    });

    test("a session ended elsewhere brings the page back to signing in", async (t) => {
      const server = await serverFor(t, backend);
      const { page } = await pageFor(t);
      await signIn(page, server, "alice@example.com");
      await page.getByRole("heading", { name: "Your orders" }).waitFor();

      // Alice signs out everywhere from another device.
      await server.api("POST", "/v1/auth/logout-all", { token: await server.token("alice@example.com") });

      await page.getByRole("heading", { name: "Sign in" }).waitFor();
      assert.equal(await page.locator("#sign-in-error").textContent(), "Your session has ended. Please sign in again.");
      assert.equal(await page.locator("#customer").isVisible(), false);
      assert.equal(await page.evaluate(() => localStorage.getItem("tidings:tokens")), null, "the spent tokens are gone");
    });

    test("an order placed over REST appears on the staff board live, and its buttons move it", async (t) => {
      const server = await serverFor(t, backend);
      const { page } = await pageFor(t);
      await signIn(page, server, "staff@example.com");
      await page.locator("#board [data-order-id]").first().waitFor();

      const alice = await server.token("alice@example.com");
      const order = await placeOrder(server, alice, ["MUG-CER", "CAP-NVY"]);

      const card = page.locator(`.column[data-status="pending"] [data-order-id="${order.id}"]`);
      await card.waitFor();
      const text = await card.textContent() ?? "";
      assert.match(text, /1 × Ceramic Mug/);
      assert.match(text, /1 × Navy Cap/);

      // Staff drive the state machine from the card; the card moves when the event comes.
      await card.getByRole("button", { name: /^Mark paid/ }).click();
      const paid = page.locator(`.column[data-status="paid"] [data-order-id="${order.id}"]`);
      await paid.waitFor();
      assert.equal((await server.api("GET", `/v1/orders/${order.id}`, { token: alice })).status, "paid");
      // The focus follows the card to its next step, for keyboard users.
      await page.waitForFunction((id) => document.activeElement?.closest("[data-order-id]")?.getAttribute("data-order-id") === id, order.id);
      assert.match(await page.evaluate(() => document.activeElement?.textContent ?? ""), /^Mark shipped/);

      await paid.getByRole("button", { name: /^Mark shipped/ }).click();
      await page.locator(`.column[data-status="shipped"] [data-order-id="${order.id}"]`).waitFor();
      await page.locator(`.column[data-status="shipped"] [data-order-id="${order.id}"]`)
        .getByRole("button", { name: /^Mark delivered/ }).click();
      const delivered = page.locator(`.column[data-status="delivered"] [data-order-id="${order.id}"]`);
      await delivered.waitFor();
      assert.equal(await delivered.getByRole("button").count(), 0, "a delivered order has no further step");

      // Cancelling a pending order takes it off the board.
      const second = await placeOrder(server, alice, ["PEN-GEL"]);
      const pending = page.locator(`.column[data-status="pending"] [data-order-id="${second.id}"]`);
      await pending.getByRole("button", { name: /^Cancel/ }).click();
      await pending.waitFor({ state: "detached" });
      assert.equal((await server.api("GET", `/v1/orders/${second.id}`, { token: alice })).status, "cancelled");
      assert.equal(await page.locator(`[data-order-id="${order.id}"]`).count(), 1, "the card is shown once");
    });

    test("a page that was offline while orders changed shows every change once, back online", async (t) => {
      const server = await serverFor(t, backend);
      const { context, page } = await pageFor(t);
      await signIn(page, server, "staff@example.com");
      const staff = await server.token("staff@example.com");
      await page.waitForFunction((count) => document.querySelectorAll("#board [data-order-id]").length === count,
        Object.values(await boardFromApi(server, staff)).flat().length);

      await context.setOffline(true);
      await page.locator('#connection[data-state="offline"]').waitFor();
      assert.equal(await page.locator("#connection .text").textContent(), "Offline");

      // Meanwhile, other clients: two new orders, orders moved on and cancelled, stock
      // counted down to its alert threshold.
      const alice = await server.token("alice@example.com");
      const first = await placeOrder(server, alice, ["TEE-BLK-M"]);
      const second = await placeOrder(server, alice, ["TOTE-CNV", "NOTE-A5"]);
      await server.api("POST", `/v1/orders/${first.id}/status`, { token: staff, body: { status: "paid" } });
      const { items: bobs } = await server.api("GET", "/v1/orders?status=paid&limit=100", { token: await server.token("bob@example.com") });
      await server.api("POST", `/v1/orders/${bobs[0].id}/status`, { token: staff, body: { status: "shipped" } });
      const { items: pendingOrders } = await server.api("GET", "/v1/orders?status=pending&limit=100", { token: staff });
      const cancelled = pendingOrders.find((/** @type {any} */ o) => o.id !== second.id && o.id !== first.id);
      await server.api("POST", `/v1/orders/${cancelled.id}/cancel`, { token: staff, body: {} });
      const { items: catalog } = await server.api("GET", "/v1/products?limit=100", { token: staff });
      const cap = catalog.find((/** @type {any} */ p) => p.sku === "CAP-NVY");
      await server.api("POST", `/v1/products/${cap.id}/stock-adjustments`, {
        token: staff, body: { delta: cap.low_stock_threshold - cap.stock, reason: "count" },
      });
      const expected = await boardFromApi(server, staff);
      const { items: products } = await server.api("GET", "/v1/products?limit=100", { token: staff });
      const { unread } = await server.api("GET", "/v1/notifications/unread-count", { token: staff });
      assert.equal(await page.locator(`[data-order-id="${first.id}"]`).count(), 0, "nothing reached the page while it was offline");

      await context.setOffline(false);
      await waitLive(page);

      await page.waitForFunction((want) => {
        const ids = (/** @type {string} */ status) => [...document.querySelectorAll(`.column[data-status="${status}"] [data-order-id]`)]
          .map((card) => card.getAttribute("data-order-id")).sort().join();
        return Object.entries(want).every(([status, list]) => ids(status) === [...list].sort().join());
      }, expected);
      const shown = await boardOf(page);
      assert.deepEqual(sorted(shown), sorted(expected), "the board equals the database");
      const all = Object.values(shown).flat();
      assert.equal(new Set(all).size, all.length, "no order is shown twice");
      assert.equal(await page.locator(`[data-order-id="${cancelled.id}"]`).count(), 0);
      const stock = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll("#stock-rows tr")]
        .map((row) => [row.getAttribute("data-sku"), Number(row.querySelector(".stock-count")?.textContent)])));
      assert.deepEqual(stock, Object.fromEntries(products.map((/** @type {any} */ p) => [p.sku, p.stock])), "the stock equals the database");
      assert.equal(await page.locator(`#low-stock [data-product-id="${cap.id}"]`).count(), 1, "the low-stock warning, once");
      await page.waitForFunction((count) => Number(document.getElementById("unread")?.textContent || 0) === count, unread);
      const notifications = await page.locator("#notification-list li").evaluateAll((items) => items.map((li) => li.getAttribute("data-notification-id")));
      assert.equal(new Set(notifications).size, notifications.length, "no notification is listed twice");
      const status = await page.locator("#connection .text").textContent();
      assert.match(status ?? "", /^Live · caught up \d+ events?$/, "the indicator tells the catch-up");
      assert.ok(Number(/\d+/.exec(status ?? "")?.[0]) >= 6, `at least the orders' six changes were caught up: ${status}`);
    });

    test("a stock adjustment below the threshold shows the low-stock warning at once", async (t) => {
      const server = await serverFor(t, backend);
      const { page } = await pageFor(t);
      const staff = await server.token("staff@example.com");
      await signIn(page, server, "staff@example.com");
      const product = await server.api("POST", "/v1/products", {
        token: staff,
        body: { sku: "LAMP-DSK", name: "Desk Lamp", unit_amount: 3999, currency: "EUR", stock: 10, low_stock_threshold: 3 },
      });
      const row = page.locator(`#stock-rows tr[data-product-id="${product.id}"]`);
      await row.waitFor();
      assert.equal(await row.locator(".flag").count(), 0, "not low yet");
      const unreadBefore = Number(await page.locator("#unread").textContent() || 0);

      await server.api("POST", `/v1/products/${product.id}/stock-adjustments`, {
        token: staff, body: { delta: -8, reason: "damaged" },
      });

      const warning = page.locator(`#low-stock [data-product-id="${product.id}"]`);
      await warning.waitFor();
      assert.equal(await warning.textContent(), "Low stock: Desk Lamp (LAMP-DSK), 2 left; alert at 3.");
      assert.equal(await page.getByRole("alert").filter({ hasText: "Desk Lamp" }).count(), 1, "announced as an alert");
      await row.locator(".flag", { hasText: "Low" }).waitFor();
      assert.equal(await row.locator(".stock-count").textContent(), "2");
      // Staff are notified too: the bell counts it, and the panel lists it.
      await page.waitForFunction((before) => Number(document.getElementById("unread")?.textContent) === before + 1, unreadBefore);
      await page.getByRole("button", { name: /^Notifications/ }).click();
      await page.locator("#notification-list li", { hasText: "Low stock: Desk Lamp" }).waitFor();

      // Restocked above the threshold, the warning goes.
      await server.api("POST", `/v1/products/${product.id}/stock-adjustments`, {
        token: staff, body: { delta: 5, reason: "restock" },
      });
      await warning.waitFor({ state: "detached" });
      assert.equal(await row.locator(".flag").count(), 0);
    });

    test("a customer sees their order's status change live, and is notified", async (t) => {
      const server = await serverFor(t, backend);
      const { page } = await pageFor(t);
      await signIn(page, server, "bob@example.com");
      await page.getByRole("heading", { name: "Your orders" }).waitFor();
      const bob = await server.token("bob@example.com");
      const { items: his } = await server.api("GET", "/v1/orders?limit=100", { token: bob });
      await page.waitForFunction((count) => document.querySelectorAll("#my-orders [data-order-id]").length === count, his.length);
      assert.equal(await page.locator("#board").isVisible(), false, "a customer has no board");

      const order = await placeOrder(server, bob, ["UMB-CMP"]);
      const card = page.locator(`#my-orders [data-order-id="${order.id}"]`);
      await card.locator('.status-badge[data-status="pending"]').waitFor();
      const unreadBefore = Number(await page.locator("#unread").textContent() || 0);

      const staff = await server.token("staff@example.com");
      await server.api("POST", `/v1/orders/${order.id}/status`, { token: staff, body: { status: "paid" } });

      await card.locator('.status-badge[data-status="paid"]').waitFor();
      assert.equal(await card.locator('[aria-current="step"]').textContent(), "paid");
      await page.waitForFunction((before) => Number(document.getElementById("unread")?.textContent) === before + 1, unreadBefore);
      await page.getByRole("button", { name: /^Notifications/ }).click();
      const note = page.locator("#notification-list li", { hasText: "Order paid" }).first();
      await note.waitFor();
      await note.getByRole("button", { name: /^Mark read/ }).click();
      await page.waitForFunction((before) => Number(document.getElementById("unread")?.textContent || 0) === before, unreadBefore);
      assert.equal(await page.evaluate(() => document.activeElement?.id), "notifications-title", "the focus stays in the panel");

      // Another customer's orders never show.
      const alice = await server.token("alice@example.com");
      const hers = await placeOrder(server, alice, ["PIN-ENM"]);
      await server.api("POST", `/v1/orders/${order.id}/cancel`, { token: bob, body: {} });
      await card.locator('.status-badge[data-status="cancelled"]').waitFor();
      assert.equal(await page.locator(`[data-order-id="${hers.id}"]`).count(), 0);
    });

    test("push notifications enabled on the dashboard are shown by its service worker while no tab is open", async (t) => {
      const server = await serverFor(t, backend, { env: PUSH_SETTINGS });
      const service = await pushServiceFor(t, server);
      const { context, page } = await pageFor(t);
      await context.grantPermissions(["notifications"], { origin: server.origin });
      await context.addInitScript(usePushService, service.subscription());

      // A page of the origin that is not the dashboard (so it holds no live connection),
      // through which the test reaches the service worker, as the browser's push client
      // would: DevTools' ServiceWorker domain.
      const other = await context.newPage();
      await other.goto(`${server.origin}/livez`);
      const devtools = await context.newCDPSession(other);
      /** @type {Map<string, string>} scope → registration id */
      const registrations = new Map();
      devtools.on("ServiceWorker.workerRegistrationUpdated", ({ registrations: updated }) => {
        for (const r of updated) {
          if (r.isDeleted) registrations.delete(r.scopeURL);
          else registrations.set(r.scopeURL, r.registrationId);
        }
      });
      await devtools.send("ServiceWorker.enable");

      await signIn(page, server, "alice@example.com");
      await page.getByRole("button", { name: /^Notifications/ }).click();
      await page.getByRole("button", { name: "Enable push notifications" }).click();
      await page.getByRole("button", { name: "Disable push notifications" }).waitFor();
      assert.match(await page.locator("#push-message").textContent() ?? "", /^Push notifications are on/);
      const { public_key: vapidKey } = await server.api("GET", "/v1/push/vapid-public-key");
      assert.deepEqual(await page.evaluate(() => /** @type {any} */ (globalThis).__pushOptions),
        { userVisibleOnly: true, applicationServerKey: vapidKey }, "subscribed with the server's key");
      const alice = await server.token("alice@example.com");
      const devices = await server.api("GET", "/v1/me/devices", { token: alice });
      assert.deepEqual(devices.map((/** @type {any} */ d) => [d.kind, d.endpoint]),
        [["webpush", service.subscription().endpoint]], "the subscription is Alice's device");
      // The service worker is registered for the dashboard, and active.
      const scope = `${server.origin}/app/`;
      assert.equal(await page.evaluate(async () => (await navigator.serviceWorker.ready).scope), scope);
      const registrationId = registrations.get(scope);
      assert.ok(registrationId, `DevTools reports the registration: ${[...registrations.keys()]}`);

      // A reload finds the subscription registered.
      await page.reload();
      await waitLive(page);
      await page.getByRole("button", { name: /^Notifications/ }).click();
      await page.getByRole("button", { name: "Disable push notifications" }).waitFor();

      // Alice closes the dashboard; the browser (and its service worker) stays.
      await page.close();
      /** @type {Promise<import("./pushservice.js").PushMessage>} */
      const pushed = new Promise((done) => { service.onMessage = done; });
      const me = await server.api("GET", "/v1/me", { token: alice });
      const admin = await server.token("admin@example.com");
      await server.api("POST", "/v1/notifications/broadcast", {
        token: admin, body: { title: "Spring sale", body: "Everything is 20% off until Sunday.", audience: [me.id] },
      });

      const message = await pushed;
      const envelope = JSON.parse(message.plaintext);
      assert.equal(envelope.type, "notification.created");
      assert.equal(envelope.data.title, "Spring sale");
      assert.equal(message.headers.topic, envelope.data.id.replaceAll("-", ""), "the notification's id collapses repeats");
      await devtools.send("ServiceWorker.deliverPushMessage", {
        origin: server.origin, registrationId, data: message.plaintext,
      });

      const shown = await other.waitForFunction(async () => {
        const registration = await navigator.serviceWorker.getRegistration("/app/");
        const notifications = await registration?.getNotifications() ?? [];
        return notifications.length > 0
          && notifications.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }));
      }, undefined, { polling: 100 });
      assert.deepEqual(await shown.jsonValue(), [{
        title: "Spring sale",
        body: "Everything is 20% off until Sunday.",
        tag: envelope.data.id,
        data: { id: envelope.data.id, kind: "broadcast", seq: envelope.seq, topic: envelope.topic },
      }], "the service worker shows the notification");
    });

    test("disabling push notifications, or signing out, removes the device and the subscription", async (t) => {
      const server = await serverFor(t, backend, { env: PUSH_SETTINGS });
      const service = await pushServiceFor(t, server);
      const { context, page } = await pageFor(t);
      await context.grantPermissions(["notifications"], { origin: server.origin });
      await context.addInitScript(usePushService, service.subscription());
      await signIn(page, server, "bob@example.com");
      await page.getByRole("button", { name: /^Notifications/ }).click();
      await page.getByRole("button", { name: "Enable push notifications" }).click();
      const disable = page.getByRole("button", { name: "Disable push notifications" });
      await disable.waitFor();
      const bob = await server.token("bob@example.com");
      assert.equal((await server.api("GET", "/v1/me/devices", { token: bob })).length, 1);
      await assertAccessible(page, "the notifications with push on");

      await disable.click();
      await page.getByRole("button", { name: "Enable push notifications" }).waitFor();
      assert.deepEqual(await server.api("GET", "/v1/me/devices", { token: bob }), [], "the device is removed");
      assert.equal(await page.evaluate(() => localStorage.getItem("test:push-subscription")), null, "unsubscribed");

      // Signing out turns it off too: the next user of this browser gets none of Bob's.
      await page.getByRole("button", { name: "Enable push notifications" }).click();
      await disable.waitFor();
      assert.equal((await server.api("GET", "/v1/me/devices", { token: bob })).length, 1);
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.getByRole("heading", { name: "Sign in" }).waitFor();
      await page.waitForFunction(() => localStorage.getItem("tidings:tokens") === null);
      assert.deepEqual(await server.api("GET", "/v1/me/devices", { token: bob }), [], "signing out removes the device");
      assert.equal(await page.evaluate(() => localStorage.getItem("test:push-subscription")), null, "and unsubscribes");
    });

    test("a browser that refuses notifications is told how to allow them", async (t) => {
      const server = await serverFor(t, backend, { env: PUSH_SETTINGS });
      const service = await pushServiceFor(t, server);
      const { context, page } = await pageFor(t);
      await context.addInitScript(usePushService, service.subscription());
      await page.addInitScript(() => {
        Notification.requestPermission = async () => "denied";
      });
      await signIn(page, server, "carol@example.com");
      await page.getByRole("button", { name: /^Notifications/ }).click();
      await page.getByRole("button", { name: "Enable push notifications" }).click();
      await page.locator("#push-message", { hasText: "Notifications are blocked for this site" }).waitFor();
      assert.equal(await page.getByRole("button", { name: "Enable push notifications" }).isVisible(), true);
      assert.deepEqual(await server.api("GET", "/v1/me/devices", { token: await server.token("carol@example.com") }), []);
    });

    test("a forgotten password is reset through the mailed link, which works once", async (t) => {
      const { server, smtp } = await serverWithMail(t, backend);
      const { page } = await pageFor(t);
      await page.goto(`${server.origin}/app/`);
      const forgot = page.getByRole("button", { name: "Forgot password?" });
      await forgot.click();
      await page.getByRole("alert").filter({ hasText: "Enter your email address" }).waitFor();
      await page.getByLabel("Email", { exact: true }).fill("alice@example.com");
      await forgot.click();
      await page.getByRole("status").filter({ hasText: "If the address has an account, a link is on its way" }).waitFor();
      // Nobody's address gets the same answer.
      await page.getByLabel("Email", { exact: true }).fill("nobody@example.com");
      await forgot.click();
      await page.getByRole("status").filter({ hasText: "If the address has an account, a link is on its way" }).waitFor();

      const mail = await smtp.next("alice@example.com");
      assert.equal(mail.subject, "Reset your Tidings password");
      const link = linkIn(mail, server.origin, "reset");
      // Opened in the same tab (a hash change), as a mail client on this machine might.
      await page.goto(link);
      await page.getByRole("heading", { name: "Choose a new password" }).waitFor();
      assert.equal(await page.evaluate(() => location.hash), "", "the token is gone from the address bar");
      await assertAccessible(page, "the reset page");
      const fresh = "a brand new passphrase";
      await page.getByLabel("New password", { exact: true }).fill(fresh);
      await page.getByLabel("Repeat the new password").fill("something else");
      await page.getByRole("button", { name: "Set the new password" }).click();
      await page.getByRole("alert").filter({ hasText: "The two passwords differ" }).waitFor();
      await page.getByLabel("New password", { exact: true }).fill("short");
      await page.getByLabel("Repeat the new password").fill("short");
      await page.getByRole("button", { name: "Set the new password" }).click();
      const tooShort = page.locator("#reset-error");
      await tooShort.filter({ hasText: /\S/ }).waitFor();
      assert.doesNotMatch(await tooShort.textContent() ?? "", /invalid fields|used, expired/, `the rule's own message: ${await tooShort.textContent()}`);
      await page.getByLabel("New password", { exact: true }).fill(fresh);
      await page.getByLabel("Repeat the new password").fill(fresh);
      await page.getByRole("button", { name: "Set the new password" }).click();

      await page.getByRole("heading", { name: "Sign in" }).waitFor();
      await page.getByRole("status").filter({ hasText: "Your new password is set" }).waitFor();
      await page.getByLabel("Email", { exact: true }).fill("alice@example.com");
      await page.getByLabel("Password", { exact: true }).fill(fresh);
      await page.getByRole("button", { name: "Sign in" }).click();
      await waitLive(page);
      await page.getByRole("heading", { name: "Your orders" }).waitFor();
      await assert.rejects(server.token("alice@example.com"), /401/, "the old password no longer works");

      // The link again: refused.
      const again = await page.context().newPage();
      await again.goto(link);
      await again.getByRole("heading", { name: "Choose a new password" }).waitFor();
      await again.getByLabel("New password", { exact: true }).fill("yet another passphrase");
      await again.getByLabel("Repeat the new password").fill("yet another passphrase");
      await again.getByRole("button", { name: "Set the new password" }).click();
      await again.getByRole("alert").filter({ hasText: "This link is used, expired or unknown" }).waitFor();
    });

    test("an address is verified through the mailed link, once", async (t) => {
      const { server, smtp } = await serverWithMail(t, backend);
      await server.api("POST", "/v1/auth/register", { body: { email: "dora@example.com", password: PASSWORD } });
      const link = linkIn(await smtp.next("dora@example.com"), server.origin, "verify");
      const { page } = await pageFor(t);

      await page.goto(link);
      await page.getByRole("heading", { name: "Address verification" }).waitFor();
      await page.getByRole("status").filter({ hasText: "Your email address is verified" }).waitFor();
      const dora = await server.token("dora@example.com");
      assert.equal((await server.api("GET", "/v1/me", { token: dora })).email_verified, true);
      await assertAccessible(page, "the verification page");
      await page.getByRole("link", { name: "Continue to the dashboard" }).click();
      await page.getByRole("heading", { name: "Sign in" }).waitFor();

      await page.goto(link);
      await page.getByRole("status").filter({ hasText: "could not be verified" }).waitFor();
      assert.match(await page.locator("#verify-result").textContent() ?? "", /This link is used, expired or unknown/);
    });

    test("the pages pass axe's accessibility checks, on a desktop and on a phone", async (t) => {
      const server = await serverFor(t, backend);
      for (const [device, viewport] of [["desktop", { width: 1280, height: 860 }], ["phone", { width: 390, height: 844 }]]) {
        const { page } = await pageFor(t, { viewport: /** @type {any} */ (viewport) });
        await page.goto(`${server.origin}/app/`);
        await page.getByRole("heading", { name: "Sign in" }).waitFor();
        await assertAccessible(page, `the sign-in page (${device})`);
        await signIn(page, server, "staff@example.com");
        await page.locator("#stock-rows tr").first().waitFor();
        await page.locator("#board [data-order-id]").first().waitFor();
        await assertAccessible(page, `the board (${device})`);
        await page.getByRole("button", { name: /^Notifications/ }).click();
        await assertAccessible(page, `the notifications (${device})`);
        // No horizontal scrolling on a phone.
        assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), `no sideways scroll (${device})`);
        await page.getByRole("button", { name: "Sign out" }).click();
        await signIn(page, server, "carol@example.com");
        await page.locator("#my-orders [data-order-id]").first().waitFor();
        await assertAccessible(page, `a customer's orders (${device})`);
        assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), `no sideways scroll (${device})`);
      }
    });

    test("a screenshot of the board is written as an artifact", async (t) => {
      const server = await serverFor(t, backend);
      const staff = await server.token("staff@example.com");
      // A fuller board than the seed's: orders in every column, a product running low.
      const alice = await server.token("alice@example.com");
      const carol = await server.token("carol@example.com");
      for (const [token, skus, steps] of /** @type {[string, string[], string[]][]} */ ([
        [carol, ["HOOD-GRY-L"], ["paid", "shipped", "delivered"]],
        [alice, ["BTL-STL", "SOCK-STR"], ["paid", "shipped", "delivered"]],
        [carol, ["KEY-LTH"], []],
      ])) {
        const order = await placeOrder(server, token, skus);
        for (const status of steps) {
          await server.api("POST", `/v1/orders/${order.id}/status`, { token: staff, body: { status } });
        }
      }
      const { items: products } = await server.api("GET", "/v1/products?limit=100", { token: staff });
      const beanie = products.find((/** @type {any} */ p) => p.sku === "BEAN-KNT");
      await server.api("POST", `/v1/products/${beanie.id}/stock-adjustments`, { token: staff, body: { delta: -6, reason: "count" } });

      const { page } = await pageFor(t);
      await signIn(page, server, "staff@example.com");
      const expected = Object.values(await boardFromApi(server, staff)).flat().length;
      await page.waitForFunction((count) => document.querySelectorAll("#board [data-order-id]").length === count, expected);
      await page.locator('#low-stock [data-product-id]').first().waitFor();
      await page.locator("#unread:not([hidden])").waitFor();
      // The newest order arrives live, as a reader would see it.
      await placeOrder(server, alice, ["MUG-CER", "NOTE-A5"]);
      await page.waitForFunction((count) => document.querySelectorAll("#board [data-order-id]").length === count, expected + 1);
      await page.evaluate(() => /** @type {HTMLElement} */ (document.activeElement)?.blur());
      await page.locator(".card.fresh").first().evaluate((card) => card.getAnimations().forEach((a) => a.finish()));

      const board = join(ARTIFACTS, `board-${backend.name}.png`);
      await page.screenshot({ path: board });
      await page.setViewportSize({ width: 390, height: 844 });
      await page.screenshot({ path: join(ARTIFACTS, `board-phone-${backend.name}.png`), fullPage: true });
      const png = await readFile(board);
      assert.equal(png.subarray(1, 4).toString(), "PNG");
      if (process.env.UPDATE_SCREENSHOT && backend.name === "sqlite") {
        await copyFile(board, join(REPO, "docs/dashboard.png"));
      }
    });
  });
}
