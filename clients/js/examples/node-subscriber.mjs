// A Node service that follows a Tidings deployment's events and resumes where it left
// off after a restart: its cursors (and its token pair) live in a JSON file.
//
//   TIDINGS_URL=http://127.0.0.1:8080 TIDINGS_EMAIL=staff@example.com TIDINGS_PASSWORD=… \
//     node examples/node-subscriber.mjs [state file, default ./tidings-subscriber.json]
//
// Stop it (Ctrl-C), change something, start it again: it prints what happened meanwhile,
// then goes on live. Each event is printed as one JSON line on stdout; status on stderr.
import { readFileSync, writeFileSync, renameSync } from "node:fs";
import { Tidings } from "@tidings/client";

/** A store in one JSON file, written whole (and atomically) on each change. */
class FileStore {
  /** @param {string} path */
  constructor(path) {
    this.path = path;
    /** @type {Record<string, unknown>} */
    this.data = {};
    try {
      this.data = JSON.parse(readFileSync(path, "utf8"));
    } catch {}
  }
  /** @param {string} key */
  get(key) {
    return this.data[key] ?? null;
  }
  /** @param {string} key @param {unknown} value */
  set(key, value) {
    if (value == null) delete this.data[key];
    else this.data[key] = value;
    writeFileSync(`${this.path}.tmp`, JSON.stringify(this.data), { mode: 0o600 });
    renameSync(`${this.path}.tmp`, this.path);
  }
}

const store = new FileStore(process.argv[2] ?? "tidings-subscriber.json");
const tidings = new Tidings({ baseUrl: process.env.TIDINGS_URL ?? "http://127.0.0.1:8080", store });
await tidings.ready;
if (!tidings.tokens) await tidings.login(String(process.env.TIDINGS_EMAIL), String(process.env.TIDINGS_PASSWORD));

tidings.onStatus((s) => {
  console.error(`[${s.state}${s.state === "live" ? `, caught up ${s.caughtUp}` : ""}${s.error ? `: ${s.error}` : ""}]`);
  // The saved session ended (expired, revoked): sign in again; the subscription carries on.
  if (s.state === "stopped" && s.error === "signed out" && process.env.TIDINGS_PASSWORD)
    tidings.login(String(process.env.TIDINGS_EMAIL), process.env.TIDINGS_PASSWORD).catch((e) => console.error(`[${e.message}]`));
});
tidings.subscribe(["orders", "inventory", "notifications"], (event) => console.log(JSON.stringify(event)), {
  onReset: (topics) => console.error(`[the server could not resume ${topics.join(", ")}: reload them over REST]`),
});

// The cursors are saved a moment after each event, and at once on the way out.
for (const signal of ["SIGINT", "SIGTERM"])
  process.once(signal, async () => {
    await tidings.close();
    process.exit(0);
  });
