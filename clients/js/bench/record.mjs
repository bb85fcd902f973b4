// Records a stream to benchmark the SDK with (bench/recorded.json): a staff member's view
// of a shop at work: the orders and products lists with their Tidings-Position, then
// every event after it as the WebSocket carried it. Run once against a fresh server:
//   TIDINGS_BIN=target/debug/tidings node clients/js/bench/record.mjs
import { writeFile } from "node:fs/promises";
import WebSocket from "ws";
import { Server, product } from "../test/helpers.mjs";

const server = await Server.start("sqlite");
try {
  const staff = await server.client("staff");
  const buyers = [await server.client("customer"), await server.client("customer")];
  const products = [];
  for (let i = 0; i < 20; i++) products.push(await product(staff, { stock: 100000, low_stock_threshold: 5 }));
  const orders = [];
  for (let i = 0; i < 30; i++)
    orders.push(await buyers[i % 2].post("/v1/orders", { items: [{ product_id: products[i % 20].id, quantity: 1 }] }));

  /** @type {Record<string, unknown[]>} */
  const lists = {};
  let position = Infinity;
  for (const kind of ["orders", "products"]) {
    const res = await staff.request("GET", `/v1/${kind}?limit=100`);
    lists[kind] = res.body.items;
    position = Math.min(position, res.position ?? 0);
  }

  const token = await staff.access();
  const ws = new WebSocket(`${server.url.replace("http", "ws")}/v1/ws`, { headers: { authorization: `Bearer ${token}` } });
  /** @type {string[]} */
  const frames = [];
  await new Promise((ok) => ws.once("open", ok));
  ws.on("message", (data) => frames.push(String(data)));
  ws.send(JSON.stringify({ type: "subscribe", topics: ["orders", "inventory", "notifications"], since: position }));

  // A shop at work: orders placed and moved along, stock counted, products edited.
  /** @type {Record<string, string>} */
  const next = { pending: "paid", paid: "shipped", shipped: "delivered" };
  for (let i = 0; i < 400; i++) {
    const roll = i % 10;
    if (roll < 3) orders.push(await buyers[i % 2].post("/v1/orders", { items: [{ product_id: products[i % 20].id, quantity: 2 }] }));
    else if (roll < 6) {
      const order = orders[i % orders.length];
      const { status } = await staff.get(`/v1/orders/${order.id}`);
      if (next[status]) await staff.post(`/v1/orders/${order.id}/status`, { status: next[status] });
    } else if (roll < 9) await staff.post(`/v1/products/${products[i % 20].id}/stock-adjustments`, { delta: 3, reason: "count" });
    else await staff.patch(`/v1/products/${products[i % 20].id}`, { name: `Thing ${i}` });
  }
  const last = Number((await staff.request("GET", "/v1/orders?limit=1")).position);
  await new Promise((ok) => {
    const check = () => frames.some((f) => JSON.parse(f).seq >= last) && ok(undefined);
    ws.on("message", check);
    check();
  });
  ws.close();
  const events = frames.filter((f) => JSON.parse(f).topic !== undefined);
  await writeFile(new URL("./recorded.json", import.meta.url), JSON.stringify({ position, lists, events }));
  console.log(`recorded ${events.length} events after position ${position}`);
} finally {
  await server.stop();
}
