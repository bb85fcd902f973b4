// The examples work: the Node subscriber prints what happened while it was stopped.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Server, backends, product, until, PASSWORD } from "./helpers.mjs";

/**
 * Runs the Node subscriber; `lines` collects its events, `live` resolves on its first "live".
 * @param {Server} server @param {string} email @param {string} state
 */
function subscriber(server, email, state) {
  const child = spawn(process.execPath, ["examples/node-subscriber.mjs", state], {
    cwd: new URL("..", import.meta.url).pathname,
    env: { ...process.env, TIDINGS_URL: server.url, TIDINGS_EMAIL: email, TIDINGS_PASSWORD: PASSWORD },
    stdio: ["ignore", "pipe", "pipe"],
  });
  /** @type {any[]} */
  const events = [];
  /** @type {string[]} */
  const said = [];
  /** @type {Set<() => void>} */
  const pokes = new Set();
  const poke = () => pokes.forEach((p) => p());
  let out = "";
  child.stdout.on("data", (chunk) => {
    const lines = (out + chunk).split("\n");
    out = /** @type {string} */ (lines.pop());
    for (const line of lines) events.push(JSON.parse(line));
    poke();
  });
  child.stderr.on("data", (chunk) => {
    said.push(...String(chunk).split("\n").filter(Boolean));
    poke();
  });
  /** @param {() => boolean} check @param {string} what */
  const wait = async (check, what) => {
    const waiting = until(check, `${what}; it said: ${said.join(" ")}`);
    pokes.add(waiting.poke);
    await waiting.done.finally(() => pokes.delete(waiting.poke));
  };
  const stop = async () => {
    const gone = new Promise((ok) => child.once("exit", ok));
    child.kill("SIGTERM");
    await gone;
  };
  return { events, said, wait, stop };
}

for (const backend of backends()) {
  describe(`${backend}: examples`, () => {
    it("the Node subscriber resumes across restarts from the cursor in its file", async (t) => {
      const server = await Server.start(backend);
      t.after(() => server.stop());
      const dir = await mkdtemp(join(tmpdir(), "tidings-example-"));
      t.after(() => rm(dir, { recursive: true, force: true }));
      const staff = await server.client("staff");
      const { id } = await product(staff);
      const adjust = () => staff.post(`/v1/products/${id}/stock-adjustments`, { delta: 1, reason: "restock" });

      const first = subscriber(server, staff.email, join(dir, "state.json"));
      await first.wait(() => first.said.some((s) => s.startsWith("[live")), "live");
      await adjust();
      await first.wait(() => first.events.length === 1, "1 event");
      await first.stop();

      await adjust();
      await adjust();
      const second = subscriber(server, staff.email, join(dir, "state.json"));
      // Events come on stdout and the status on stderr: two pipes, read in either order.
      await second.wait(
        () => second.events.length >= 2 && second.said.some((s) => s.startsWith("[live")),
        "the 2 missed events, then live",
      );
      await second.stop();
      assert.deepEqual(second.events.map((e) => e.data.stock), [1002, 1003]);
      assert.ok(second.said.includes("[live, caught up 2]"), second.said.join(" "));
    });
  });
}
