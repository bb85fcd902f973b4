// Snapshot then stream: a REST list read at a stream position (`Tidings-Position`), then
// the events after that position applied by each resource's `version`, so that a change
// committed during the load is neither lost nor applied twice.

import { TidingsError } from "./errors.js";

/** @typedef {import("./client.js").Tidings} Tidings */
/** @typedef {import("./events.js").TidingsEvent} TidingsEvent */
/** @typedef {Record<string, any>} Item */
/**
 * What each kind of list holds.
 * @typedef {{ orders: import("./events.js").Order, products: import("./events.js").Product,
 *   notifications: import("./events.js").Notification }} Kinds
 */

const KINDS = {
  orders: ["orders", "/v1/orders"],
  products: ["inventory", "/v1/products"],
  notifications: ["notifications", "/v1/notifications"],
};

/** @param {unknown} value */
const yes = (value) => value === true || value === "true";

/** A timestamp that sorts as text whatever its digits of fraction. @param {string} at */
const instant = (at) => at.replace(/(\.\d+)?Z$/, (_, fraction = ".") => `${(fraction + "00000000").slice(0, 10)}Z`);

/** @template [T=Item] */
export class LiveList {
  /**
   * @param {Tidings} client @param {"orders" | "products" | "notifications"} kind
   * @param {Record<string, string | number | boolean | undefined>} [query]
   */
  constructor(client, kind, query = {}) {
    if (!KINDS[kind]) throw new TypeError(`unknown list: ${kind}`);
    const [topic, path] = KINDS[kind];
    /** The topic its events come on. */
    this.topic = topic;
    /** Its REST path. */
    this.path = path;
    this.client = client;
    this.kind = kind;
    this.query = query;
    /** @type {Map<string, Item>} */
    this.byId = new Map();
    /** @type {Item[] | null} */
    this.sorted = null;
    /** @type {Set<(items: T[]) => void>} */
    this.listeners = new Set();
    /** Events for items being fetched, applied once they arrive. @type {Map<string, TidingsEvent[]>} */
    this.fetching = new Map();
    /** @type {import("./live.js").Subscription | null} */
    this.sub = null;
    this.closed = false;
    this.scheduled = false;
    /** Settles once the first load is applied; rejects if it failed (then `reload()`). */
    this.ready = this.load();
    // Not left unhandled when the app does not await it (Node would end the process).
    this.ready.catch(() => {});
  }

  /**
   * The collection, in the server's order for this query: orders and notifications newest
   * first; products by `sort`, then id.
   * @returns {T[]}
   */
  get items() {
    if (!this.sorted) {
      // Each item's sort key once, not once per comparison.
      let key = this.kind === "products" ? String(this.query.sort ?? "created_at") : "-id";
      const sign = key[0] === "-" ? -1 : 1;
      key = key.replace(/^-/, "");
      /** @param {Item} item */
      const value = (item) =>
        key === "name" ? item.name.toLowerCase() : key === "price" ? item.unit_amount : key === "created_at" ? instant(item.created_at) : item[key];
      /** @type {Array<[any, Item]>} */
      const keyed = [...this.byId.values()].map((item) => [value(item), item]);
      keyed.sort(([x, a], [y, b]) => sign * (x < y ? -1 : x > y ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      this.sorted = keyed.map(([, item]) => item);
    }
    return /** @type {T[]} */ (this.sorted);
  }

  /** Calls `listener` with the items after each change; returns a function that stops it. @param {(items: T[]) => void} listener */
  onChange(listener) {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  close() {
    this.closed = true;
    this.sub?.close();
    this.listeners.clear();
  }

  /** Loads every page; subscribes (or resumes) after the earliest page's position. */
  async load() {
    /** @type {Item[]} */
    const items = [];
    let position = Infinity;
    let cursor = null;
    do {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(this.query)) if (value != null) params.set(key, String(value));
      if (cursor) params.set("cursor", cursor);
      const res = await this.client.request("GET", `${this.path}?${params}`);
      if (res.position == null) throw new TidingsError(res.status, null, "the server sent no Tidings-Position");
      position = Math.min(position, res.position);
      items.push(...res.body.items);
      cursor = res.body.next;
    } while (cursor && !this.closed);
    /** @type {Map<string, Item>} */
    const next = new Map();
    for (const item of items) {
      const held = this.byId.get(item.id);
      next.set(item.id, held && held.version > item.version ? held : item);
    }
    this.byId = next;
    this.changed();
    if (this.closed) return;
    if (this.sub) this.sub.resume(position);
    else
      this.sub = this.client.subscribe(this.topic, (event) => this.apply(event), {
        since: position,
        onReset: () => this.reload(),
      });
  }

  /** Loads the list again, retrying every 2 s until it succeeds (the server could not resume, say). */
  reload() {
    this.load().catch((e) => {
      (globalThis.reportError ?? console.error)(e);
      if (!this.closed) setTimeout(() => this.reload(), 2000);
    });
  }

  /** @param {TidingsEvent} event */
  apply(event) {
    const d = /** @type {Item} */ (event.data);
    const id = d.order_id ?? d.product_id ?? d.id;
    const queued = this.fetching.get(id);
    if (queued) return void queued.push(event);
    switch (event.type) {
      case "order.created":
      case "product.created":
      case "product.updated":
      case "notification.created":
        return this.put(d);
      case "order.status_changed":
      case "order.cancelled":
        return this.patch(id, { status: d.status, updated_at: d.updated_at, user_id: d.user_id, version: d.version });
      case "product.deleted":
        return this.patch(id, { deleted_at: d.deleted_at, version: d.version });
      case "inventory.stock_changed":
        return this.patch(id, { stock: d.stock, version: d.version });
      case "notification.read":
        // `ids` names them; an older server sent `all` alone.
        for (const read of d.ids ?? (d.all ? [...this.byId.keys()] : [])) {
          const held = this.byId.get(read);
          if (held && !held.read_at) this.set({ ...held, read_at: d.read_at, version: d.version ?? held.version });
        }
        return;
      case "notification.deleted":
        if (this.byId.delete(id)) this.changed();
    }
  }

  /** A whole item: taken unless the one held is as new. @param {Item} item */
  put(item) {
    const held = this.byId.get(item.id);
    if (held && (item.version === undefined || item.version <= held.version)) return;
    this.set(item);
  }

  /** Part of an item; one not held is fetched if the part could match the query. @param {string} id @param {Item} fields */
  patch(id, fields) {
    const held = this.byId.get(id);
    if (held) {
      if (fields.version > held.version) this.set({ ...held, ...fields });
    } else if (this.matches(fields)) this.fetch(id);
  }

  /** @param {string} id */
  async fetch(id) {
    /** @type {TidingsEvent[]} */
    const queued = [];
    this.fetching.set(id, queued);
    try {
      this.put((await this.client.request("GET", `${this.path}/${id}`)).body);
    } catch (e) {
      if (!(e instanceof TidingsError && e.status === 404)) (globalThis.reportError ?? console.error)(e);
    }
    this.fetching.delete(id);
    for (const event of queued) this.apply(event);
  }

  /** @param {Item} item */
  set(item) {
    if (this.matches(item)) this.byId.set(item.id, item);
    else this.byId.delete(item.id);
    this.changed();
  }

  /** Whether what is known of an item fits the query's filters (a field not given is no reason to refuse). @param {Item} item */
  matches(item) {
    const q = this.query;
    /** @param {string} field @param {(value: any) => boolean} test */
    const fits = (field, test) => !(field in item) || test(item[field]);
    if (this.kind === "orders")
      return fits("status", (s) => q.status == null || s === q.status) && fits("user_id", (u) => q.user_id == null || u === q.user_id);
    if (this.kind === "notifications") return fits("read_at", (r) => !yes(q.unread) || r == null);
    const search = q.q == null ? null : String(q.q).trim().toLowerCase();
    return (
      fits("deleted_at", (d) => yes(q.include_deleted) || d == null) &&
      fits("unit_amount", (p) => (q.min_price == null || p >= Number(q.min_price)) && (q.max_price == null || p <= Number(q.max_price))) &&
      fits("stock", (s) => q.in_stock == null || (yes(q.in_stock) ? s > 0 : s === 0)) &&
      (!search || !("name" in item) || item.name.toLowerCase().includes(search) || item.sku.toLowerCase().includes(search))
    );
  }

  changed() {
    this.sorted = null;
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      for (const listener of this.listeners) listener(this.items);
    });
  }
}
