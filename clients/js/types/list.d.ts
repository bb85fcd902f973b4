/** @template [T=Item] */
export class LiveList<T = Item> {
    /**
     * @param {Tidings} client @param {"orders" | "products" | "notifications"} kind
     * @param {Record<string, string | number | boolean | undefined>} [query]
     */
    constructor(client: Tidings, kind: "orders" | "products" | "notifications", query?: Record<string, string | number | boolean | undefined>);
    /** The topic its events come on. */
    topic: string;
    /** Its REST path. */
    path: string;
    client: import("./client.js").Tidings;
    kind: "orders" | "notifications" | "products";
    query: Record<string, string | number | boolean | undefined>;
    /** @type {Map<string, Item>} */
    byId: Map<string, Item>;
    /** @type {Item[] | null} */
    sorted: Item[] | null;
    /** @type {Set<(items: T[]) => void>} */
    listeners: Set<(items: T[]) => void>;
    /** Events for items being fetched, applied once they arrive. @type {Map<string, TidingsEvent[]>} */
    fetching: Map<string, TidingsEvent[]>;
    /** @type {import("./live.js").Subscription | null} */
    sub: import("./live.js").Subscription | null;
    closed: boolean;
    scheduled: boolean;
    /** Settles once the first load is applied; rejects if it failed (then `reload()`). */
    ready: Promise<void>;
    /**
     * The collection, in the server's order for this query: orders and notifications newest
     * first; products by `sort`, then id.
     * @returns {T[]}
     */
    get items(): T[];
    /** Calls `listener` with the items after each change; returns a function that stops it. @param {(items: T[]) => void} listener */
    onChange(listener: (items: T[]) => void): () => undefined;
    close(): void;
    /** Loads every page; subscribes (or resumes) after the earliest page's position. */
    load(): Promise<void>;
    /** Loads the list again, retrying every 2 s until it succeeds (the server could not resume, say). */
    reload(): void;
    /** @param {TidingsEvent} event */
    apply(event: TidingsEvent): void;
    /** A whole item: taken unless the one held is as new. @param {Item} item */
    put(item: Item): void;
    /** Part of an item; one not held is fetched if the part could match the query. @param {string} id @param {Item} fields */
    patch(id: string, fields: Item): void;
    /** @param {string} id */
    fetch(id: string): Promise<void>;
    /** @param {Item} item */
    set(item: Item): void;
    /** Whether what is known of an item fits the query's filters (a field not given is no reason to refuse). @param {Item} item */
    matches(item: Item): any;
    changed(): void;
}
export type Tidings = import("./client.js").Tidings;
export type TidingsEvent = import("./events.js").TidingsEvent;
export type Item = Record<string, any>;
/**
 * What each kind of list holds.
 */
export type Kinds = {
    orders: import("./events.js").Order;
    products: import("./events.js").Product;
    notifications: import("./events.js").Notification;
};
