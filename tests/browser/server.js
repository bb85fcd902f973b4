// A real Tidings server for a test: the binary (TIDINGS_BIN, else the debug build) on a
// port of its own, seeded with the demo data, on SQLite in a temporary directory or on a
// fresh PostgreSQL database with the Redis bus on a channel of its own. Plus the few REST
// calls the tests make from outside the page.

import { spawn, execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const ARTIFACTS = join(REPO, "target/browser-artifacts");
export const BINARY = process.env.TIDINGS_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(REPO, "target"), "debug/tidings");

/** The password of every seeded user (admin@, staff@, alice@, bob@, carol@example.com). */
export const PASSWORD = "browser tests password";

/**
 * @typedef {{ name: "sqlite" } | { name: "postgres", databaseUrl: string, redisUrl: string }} Backend
 */

/**
 * The backends to run on: SQLite, and PostgreSQL with Redis from TEST_DATABASE_URL and
 * TEST_REDIS_URL. Without them the suite fails, unless BROWSER_BACKENDS=sqlite says to run
 * on SQLite alone: nothing is skipped quietly.
 * @returns {Backend[]}
 */
export function backends() {
  const wanted = (process.env.BROWSER_BACKENDS ?? "sqlite,postgres").split(",").map((s) => s.trim());
  /** @type {Backend[]} */
  const chosen = [];
  for (const name of wanted) {
    if (name === "sqlite") {
      chosen.push({ name });
    } else if (name === "postgres") {
      const databaseUrl = process.env.TEST_DATABASE_URL;
      const redisUrl = process.env.TEST_REDIS_URL;
      if (!databaseUrl || !redisUrl) {
        throw new Error("the browser tests run on PostgreSQL + Redis too: set TEST_DATABASE_URL and TEST_REDIS_URL (or BROWSER_BACKENDS=sqlite)");
      }
      chosen.push({ name, databaseUrl, redisUrl });
    } else {
      throw new Error(`BROWSER_BACKENDS: unknown backend ${name} (sqlite, postgres)`);
    }
  }
  return chosen;
}

/** A running server. */
export class Server {
  /**
   * @param {import("node:child_process").ChildProcess} child
   * @param {string} origin
   * @param {() => Promise<void>} cleanup
   */
  constructor(child, origin, cleanup) {
    this.child = child;
    /** `http://127.0.0.1:PORT` */
    this.origin = origin;
    this.cleanup = cleanup;
  }

  /** Stops the server (SIGTERM, as a deployment does) and removes its data. */
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((done) => this.child.once("exit", done));
      this.child.kill("SIGTERM");
      await exited;
    }
    await this.cleanup();
  }

  /**
   * A REST call; the parsed body, or an error with the status and body.
   * @param {string} method
   * @param {string} path
   * @param {{ token?: string, body?: unknown }} [options]
   * @returns {Promise<any>}
   */
  async api(method, path, { token, body } = {}) {
    /** @type {Record<string, string>} */
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(this.origin + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  /**
   * An access token for a seeded user (or one registered by the test).
   * @param {string} email
   * @returns {Promise<string>}
   */
  async token(email) {
    const pair = await this.api("POST", "/v1/auth/login", { body: { email, password: PASSWORD } });
    return pair.access_token;
  }
}

/**
 * A free port on 127.0.0.1, for a server that must know its own address before it starts.
 * @returns {Promise<number>}
 */
async function freePort() {
  const probe = createNetServer();
  await new Promise((done) => probe.listen(0, "127.0.0.1", () => done(undefined)));
  const { port } = /** @type {import("node:net").AddressInfo} */ (probe.address());
  await new Promise((done) => probe.close(done));
  return port;
}

/**
 * @typedef {object} ServerOptions
 * @property {Record<string, string>} [env] settings added to the server's environment
 * @property {boolean} [publicUrl] listen on a port chosen here, and give the server its own
 *   address as `TIDINGS_PUBLIC_URL`, so that the links it mails open on it
 */

/**
 * Starts a server on `backend` with the demo data (`tidings seed`) in it.
 * @param {Backend} backend
 * @param {string} label names the server's log in the artifacts folder
 * @param {ServerOptions} [options]
 * @returns {Promise<Server>}
 */
export async function startServer(backend, label, options = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), "tidings-browser-"));
  const listen = options.publicUrl ? `127.0.0.1:${await freePort()}` : "127.0.0.1:0";
  /** @type {Record<string, string>} */
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    TIDINGS_LISTEN: listen,
    TIDINGS_DATA_DIR: dataDir,
    TIDINGS_JWT_SECRET: randomBytes(48).toString("base64"),
    TIDINGS_LOG_FORMAT: "json",
    TIDINGS_PASSWORD: PASSWORD,
    RUST_LOG: "info,sqlx=warn",
    ...(options.publicUrl ? { TIDINGS_PUBLIC_URL: `http://${listen}` } : {}),
    ...options.env,
  };
  let dropDatabase = async () => {};
  if (backend.name === "postgres") {
    const name = `tidings_test_browser_${randomBytes(8).toString("hex")}`;
    await run("psql", [backend.databaseUrl, "-qc", `create database "${name}"`]);
    dropDatabase = async () => {
      await run("psql", [backend.databaseUrl, "-qc", `drop database if exists "${name}" with (force)`]);
    };
    const url = new URL(backend.databaseUrl);
    url.pathname = `/${name}`;
    env.DATABASE_URL = url.toString();
    env.REDIS_URL = backend.redisUrl;
    env.TIDINGS_REDIS_CHANNEL = `tidings:test:${name}`;
  }
  const cleanup = async () => {
    await dropDatabase();
    await rm(dataDir, { recursive: true, force: true });
  };
  try {
    await run(BINARY, ["seed"], { env });
  } catch (e) {
    await cleanup();
    throw new Error(`tidings seed failed (is ${BINARY} built? cargo build): ${/** @type {Error} */ (e).message}`);
  }

  await mkdir(ARTIFACTS, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS, `server-${label}.log`));
  const child = spawn(BINARY, ["serve"], { env, stdio: ["ignore", "ignore", "pipe"] });
  const stderr = /** @type {import("node:stream").Readable} */ (child.stderr);
  stderr.pipe(log);
  const origin = await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error("the server did not start within 30 s")), 30_000);
    child.once("exit", (code) => fail(new Error(`the server exited with ${code} (see server-${label}.log)`)));
    createInterface({ input: stderr }).on("line", (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.message === "tidings is listening") {
          clearTimeout(timer);
          done(`http://${entry.address}`);
        }
      } catch {
        // Not a log line of ours.
      }
    });
  }).catch(async (e) => {
    child.kill("SIGKILL");
    await cleanup();
    throw e;
  });
  return new Server(child, origin, cleanup);
}
