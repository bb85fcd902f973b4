// What the SDK tests share: a real Tidings server per test (the binary, on SQLite or on a
// fresh PostgreSQL database with Redis), users made with its CLI or the API, a TCP proxy
// that can cut and stall connections, and waiting on conditions without sleeping.

import { spawn, execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { promisify } from "node:util";
import WebSocket from "ws";
import { Tidings, MemoryStore } from "../src/index.js";

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
/** The servers' metrics token: `/metrics` on their port answers only bearers of it. */
export const METRICS_TOKEN = randomBytes(24).toString("base64url");
export const BIN = process.env.TIDINGS_BIN ?? resolve(here, "../../../target/debug/tidings");
export const PASSWORD = "a test password, long enough";

/** The backends to run on: SQLite always; PostgreSQL + Redis when TEST_DATABASE_URL is set. */
export function backends() {
  /** @type {Array<"sqlite" | "postgres">} */
  const list = ["sqlite"];
  if (process.env.TEST_DATABASE_URL) list.push("postgres");
  else if (process.env.TIDINGS_TEST_REQUIRE_POSTGRES) throw new Error("TEST_DATABASE_URL is required");
  return list;
}

/** A free TCP port on loopback. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(undefined)));
  const { port } = /** @type {net.AddressInfo} */ (server.address());
  await new Promise((ok) => server.close(ok));
  return port;
}

/** @param {string} url @param {string} sql */
async function psql(url, sql) {
  await run("psql", [url, "-qAtc", sql]);
}

/**
 * A Tidings server, started from the binary: on SQLite in a temporary directory, or on a
 * fresh PostgreSQL database (dropped by `stop`) with Redis on a channel of its own.
 */
export class Server {
  /** @param {"sqlite" | "postgres"} backend @param {Record<string, string>} [env] */
  static async start(backend, env = {}) {
    const server = new Server(backend, env);
    await server.prepare();
    await server.launch();
    return server;
  }

  /** @param {"sqlite" | "postgres"} backend @param {Record<string, string>} env */
  constructor(backend, env) {
    this.backend = backend;
    this.extra = env;
    this.port = 0;
    this.dir = "";
    /** @type {Record<string, string>} */
    this.env = {};
    /** @type {import("node:child_process").ChildProcess | null} */
    this.child = null;
    /** @type {string[]} */
    this.log = [];
    /** @type {Set<(line: string) => void>} */
    this.watchers = new Set();
    this.database = "";
  }

  async prepare() {
    this.port = await freePort();
    this.dir = await mkdtemp(join(tmpdir(), "tidings-sdk-"));
    /** @type {Record<string, string>} */
    const env = {
      PATH: process.env.PATH ?? "",
      RUST_LOG: "info,sqlx=warn",
      TIDINGS_DATA_DIR: this.dir,
      TIDINGS_JWT_SECRET: randomBytes(48).toString("base64"),
      TIDINGS_AUTH_RATE_PER_IP: "0",
      TIDINGS_AUTH_RATE_PER_EMAIL: "0",
      TIDINGS_HASH_QUEUE_TIMEOUT: "60s",
      TIDINGS_METRICS_TOKEN: METRICS_TOKEN,
    };
    if (this.backend === "postgres") {
      const base = /** @type {string} */ (process.env.TEST_DATABASE_URL);
      this.database = `tidings_test_sdk_${randomBytes(6).toString("hex")}`;
      await psql(base, `create database ${this.database}`);
      const url = new URL(base);
      url.pathname = `/${this.database}`;
      env.DATABASE_URL = url.href;
      env.REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
      env.TIDINGS_REDIS_CHANNEL = `tidings:sdk-test:${this.database}`;
    }
    this.env = { ...env, ...this.extra };
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the binary (again, on the same port, database and key) and waits until it listens. */
  async launch(port = this.port) {
    const child = spawn(BIN, ["serve"], {
      env: { ...this.env, TIDINGS_LISTEN: `127.0.0.1:${port}` },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    let rest = "";
    /** @type {NonNullable<typeof child.stderr>} */ (child.stderr).on("data", (chunk) => {
      const lines = (rest + chunk).split("\n");
      rest = /** @type {string} */ (lines.pop());
      for (const line of lines) {
        this.log.push(line);
        for (const watcher of this.watchers) watcher(line);
      }
    });
    const exited = new Promise((_, fail) =>
      child.once("exit", (code) => fail(new Error(`tidings exited with ${code}:\n${this.log.slice(-20).join("\n")}`))),
    );
    exited.catch(() => {});
    await Promise.race([this.waitForLog(/tidings is listening/), exited]);
  }

  /** Resolves with the first line from now on that matches. @param {RegExp} pattern */
  waitForLog(pattern) {
    return new Promise((ok) => {
      /** @param {string} line */
      const watcher = (line) => {
        if (pattern.test(line)) {
          this.watchers.delete(watcher);
          ok(line);
        }
      };
      this.watchers.add(watcher);
    });
  }

  /** Stops the server (SIGTERM: it closes live connections with 1001) and waits for it. */
  async halt() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const gone = new Promise((ok) => child.once("exit", ok));
    child.kill("SIGTERM");
    await gone;
    this.child = null;
  }

  async stop() {
    await this.halt();
    await rm(this.dir, { recursive: true, force: true });
    if (this.database) await psql(/** @type {string} */ (process.env.TEST_DATABASE_URL), `drop database if exists ${this.database} with (force)`);
  }

  /** Another instance on the same database (and key), on a port of its own; `halt` it when done. */
  async sibling() {
    const other = new Server(this.backend, this.extra);
    other.env = this.env;
    other.dir = this.dir;
    other.port = await freePort();
    await other.launch();
    return other;
  }

  /** Creates a user with the binary's CLI. @param {string} email @param {"customer" | "staff" | "admin"} role */
  async createUser(email, role = "customer") {
    await run(BIN, ["user", "create", "--email", email, "--role", role], { env: { ...this.env, TIDINGS_PASSWORD: PASSWORD } });
  }

  /**
   * A client signed in as a new user of `role`, with options of the test's.
   * @param {"customer" | "staff" | "admin"} role @param {import("../src/events.js").Options} [options]
   */
  async client(role = "customer", options = {}) {
    const email = `${role}-${randomBytes(4).toString("hex")}@example.com`;
    await this.createUser(email, role);
    return this.signIn(email, options);
  }

  /** @param {string} email @param {import("../src/events.js").Options} [options] */
  async signIn(email, options = {}) {
    const tidings = new Tidings({ baseUrl: this.url, WebSocket, store: new MemoryStore(), backoff: { initialMs: 50, maxMs: 1000 }, ...options });
    await tidings.login(email, PASSWORD);
    return Object.assign(tidings, { email });
  }
}

/**
 * A TCP proxy in front of a server: `cut()` drops every connection through it, `hold()`
 * refuses new ones until `release()`, `stall()` stops passing the server's bytes on (a
 * client that stopped reading), so tests control the network between client and server.
 */
export class Proxy {
  /** @param {number} target */
  static async start(target) {
    const proxy = new Proxy(target);
    await new Promise((ok) => proxy.server.listen(0, "127.0.0.1", () => ok(undefined)));
    return proxy;
  }

  /** @param {number} target */
  constructor(target) {
    this.target = target;
    this.held = false;
    this.stalled = false;
    /** Refuse WebSocket handshakes, as some proxies and firewalls do. */
    this.blockWebSockets = false;
    /** @type {Set<net.Socket>} */
    this.sockets = new Set();
    /** Each server-side socket and its client. @type {Map<net.Socket, net.Socket>} */
    this.pairs = new Map();
    this.server = net.createServer((client) => {
      if (this.held) return void client.destroy();
      const upstream = net.connect(this.target, "127.0.0.1");
      this.sockets.add(client).add(upstream);
      this.pairs.set(upstream, client);
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
        this.pairs.delete(upstream);
      };
      client.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
      client.once("data", (first) => {
        client.pause();
        if (this.blockWebSockets && /^upgrade:\s*websocket/im.test(first.toString("latin1"))) return end();
        upstream.write(first);
        client.pipe(upstream);
      });
      if (this.stalled) upstream.pause();
      else upstream.pipe(client);
    });
  }

  get url() {
    return `http://127.0.0.1:${/** @type {net.AddressInfo} */ (this.server.address()).port}`;
  }

  cut() {
    for (const socket of this.sockets) socket.destroy();
  }

  hold() {
    this.held = true;
  }

  release() {
    this.held = false;
  }

  /** Stops reading from the server, like a client that stopped reading. */
  stall() {
    this.stalled = true;
    for (const upstream of this.pairs.keys()) {
      upstream.unpipe();
      upstream.pause();
    }
  }

  unstall() {
    this.stalled = false;
    for (const [upstream, client] of this.pairs) {
      upstream.pipe(client);
      upstream.resume();
    }
  }

  async close() {
    this.cut();
    await new Promise((ok) => this.server.close(ok));
  }
}

/**
 * Resolves when `check()` is true, testing it now and after each call of the returned
 * `poke` (wired to whatever signals progress); fails after `ms` with `what`.
 * @param {() => boolean} check @param {string} what @param {number} [ms]
 */
export function until(check, what, ms = 20000) {
  /** @type {() => void} */
  let poke = () => {};
  const done = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`timed out waiting for ${what}`)), ms);
    poke = () => {
      if (check()) {
        clearTimeout(timer);
        ok(undefined);
      }
    };
  });
  queueMicrotask(poke);
  return { done, poke: () => poke() };
}

/**
 * Collects the events a subscription receives, and lets a test await a count or a seq.
 */
export class Inbox {
  constructor() {
    /** @type {import("../src/events.js").TidingsEvent[]} */
    this.events = [];
    /** @type {Set<() => void>} */
    this.pokes = new Set();
    this.handler = (/** @type {any} */ event) => {
      this.events.push(event);
      for (const poke of this.pokes) poke();
    };
  }

  /** @param {(events: import("../src/events.js").TidingsEvent[]) => boolean} check @param {string} what */
  async wait(check, what) {
    const waiting = until(() => check(this.events), what);
    this.pokes.add(waiting.poke);
    try {
      await waiting.done;
    } finally {
      this.pokes.delete(waiting.poke);
    }
  }

  /** The seqs, checked to be strictly increasing per topic (in order, no repeat). */
  seqs() {
    /** @type {Map<string, number>} */
    const last = new Map();
    for (const event of this.events) {
      const before = last.get(event.topic) ?? -1;
      if (event.seq <= before) throw new Error(`${event.topic} seq ${event.seq} after ${before}: out of order or repeated`);
      last.set(event.topic, event.seq);
    }
    return this.events.map((e) => e.seq);
  }
}

/** Awaits a status of `tidings` that passes `check`. @param {Tidings} tidings @param {(s: import("../src/events.js").Status) => boolean} check @param {string} what */
export async function status(tidings, check, what) {
  const waiting = until(() => check(tidings.status), what);
  const off = tidings.onStatus(waiting.poke);
  try {
    await waiting.done;
  } finally {
    off();
  }
}

/** A product, made by a staff client. @param {Tidings} staff @param {Partial<import("../src/events.js").Product>} [fields] */
export async function product(staff, fields = {}) {
  const sku = `SKU-${randomBytes(5).toString("hex").toUpperCase()}`;
  return staff.post("/v1/products", { sku, name: `Thing ${sku}`, unit_amount: 1000, currency: "EUR", stock: 1000, ...fields });
}
