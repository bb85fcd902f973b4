// How fast the SDK applies events: a recorded stream (bench/recorded.json, made by
// bench/record.mjs against a real server) fed through a WebSocket stand-in to a client
// with two live lists (orders, products) and a subscription to every topic. Each event is
// parsed, dispatched, applied to its list by version and moves the cursor, as in an app.
// The rate is per second of the process's CPU time (on a shared machine wall-clock time
// also counts other programs' turns); pinned to one core, that is one core's rate.
//   taskset -c 0 node bench/apply.mjs [events, default 200000]
import { readFileSync } from "node:fs";
import { setImmediate as tick } from "node:timers/promises";
import { Tidings, MemoryStore } from "../src/index.js";

const total = Number(process.argv[2] ?? 200000);
const recorded = JSON.parse(readFileSync(new URL("./recorded.json", import.meta.url), "utf8"));
const events = recorded.events.map((/** @type {string} */ text) => JSON.parse(text));
const span = events.at(-1).seq - recorded.position;

// The recording over and over, each pass with later seqs and versions, so every event is new.
/** @type {string[]} */
const stream = [];
for (let pass = 0; stream.length < total; pass++)
  for (const event of events) {
    if (stream.length === total) break;
    const data = event.data.version === undefined ? event.data : { ...event.data, version: event.data.version + pass * 1000 };
    stream.push(JSON.stringify({ ...event, seq: event.seq + pass * span, data }));
  }

/** The server's side of the socket: answers `subscribe`; the benchmark writes the events. */
class Socket {
  /** @type {Socket | null} */
  static last = null;
  constructor() {
    Socket.last = this;
    this.readyState = 0;
    /** @type {(m: { data: string }) => void} */
    this.onmessage = () => {};
    /** @type {() => void} */
    this.onopen = () => {};
    this.onclose = () => {};
    this.onerror = () => {};
    setImmediate(() => {
      this.readyState = 1;
      this.onopen();
    });
  }
  /** @param {string} text */
  send(text) {
    const message = JSON.parse(text);
    if (message.type === "subscribe")
      setImmediate(() => this.onmessage({ data: JSON.stringify({ type: "subscribed", topics: message.topics, seq: recorded.position }) }));
  }
  close() {}
}

/** The REST side: the recorded lists at their position, and stream tickets. @param {string | URL | Request} url @param {RequestInit} [init] */
async function fetch(url, init) {
  const path = String(url);
  const kind = /\/v1\/(orders|products)\?/.exec(path)?.[1];
  if (init?.method === "POST") return Response.json({ ticket: "t", expires_in: 30 }, { status: 201 });
  if (kind) return Response.json({ items: recorded.lists[kind], next: null }, { headers: { "tidings-position": String(recorded.position) } });
  return Response.json({ code: "not_found" }, { status: 404 });
}

const now = Math.floor(Date.now() / 1000);
const claims = Buffer.from(JSON.stringify({ sub: "bench", role: "staff", iat: now, exp: now + 3600 })).toString("base64url");

/** One run: the whole stream, in reads of 64 frames (one event-loop turn each, as from a socket). */
async function run() {
  const tidings = new Tidings({
    baseUrl: "http://bench",
    store: new MemoryStore(),
    WebSocket: Socket,
    fetch,
    tokens: { access_token: `x.${claims}.x`, refresh_token: "r", expires_in: 3600 },
  });
  let handled = 0;
  tidings.subscribe(["orders", "inventory", "notifications"], () => void handled++);
  const orders = tidings.live.list("orders");
  const products = tidings.live.list("products");
  let renders = 0;
  orders.onChange((items) => (renders += items.length > 0 ? 1 : 0));
  products.onChange((items) => (renders += items.length > 0 ? 1 : 0));
  await Promise.all([orders.ready, products.ready]);
  await new Promise((ok) => tidings.onStatus((s) => s.state === "live" && ok(undefined)));
  const socket = /** @type {Socket} */ (Socket.last);

  const started = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  for (let i = 0; i < stream.length; i += 64) {
    for (let j = i; j < i + 64 && j < stream.length; j++) socket.onmessage({ data: stream[j] });
    await tick();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  const cpuSeconds = (used.user + used.system) / 1e6;
  if (handled !== stream.length) throw new Error(`handled ${handled} of ${stream.length}`);
  await tidings.close();
  return { rate: stream.length / cpuSeconds, wall: stream.length / seconds, orders: orders.items.length, products: products.items.length, renders };
}

const runs = [];
for (let i = 0; i < 5; i++) runs.push(await run());
const median = (/** @type {number[]} */ list) => Math.round(list.sort((a, b) => a - b)[2]).toLocaleString("en");
const { orders, products } = runs[0];
console.log(
  `applied ${stream.length} events (${events.length} recorded, repeated) to a subscription and two live lists ` +
    `(${orders} orders, ${products} products), median of 5 runs: ${median(runs.map((r) => r.rate))} events ` +
    `per second of CPU time (${median(runs.map((r) => r.wall))}/s of wall-clock time)`,
);
