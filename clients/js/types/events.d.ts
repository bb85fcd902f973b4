export type Role = "customer" | "staff" | "admin";
export type OrderStatus = "pending" | "paid" | "shipped" | "delivered" | "cancelled";
export type Topic = "orders" | "inventory" | "notifications";
export type Product = {
    id: string;
    sku: string;
    name: string;
    description: string;
    /**
     * price in the currency's minor units
     */
    unit_amount: number;
    /**
     * ISO 4217
     */
    currency: string;
    stock: number;
    low_stock_threshold: number;
    created_at: string;
    updated_at: string;
    deleted_at: string | null;
    /**
     * bumped by every change
     */
    version: number;
};
export type OrderItem = {
    product_id: string;
    sku: string;
    name: string;
    unit_amount: number;
    quantity: number;
};
export type Order = {
    id: string;
    user_id: string;
    status: OrderStatus;
    currency: string;
    total_amount: number;
    items: OrderItem[];
    created_at: string;
    updated_at: string;
    version: number;
};
export type Notification = {
    id: string;
    user_id: string;
    kind: "order_status" | "low_stock" | "broadcast";
    title: string;
    body: string;
    data: Record<string, unknown>;
    read_at: string | null;
    created_at: string;
    /**
     * 1 while unread, 2 once read
     */
    version: number;
};
/**
 * What every event carries.
 */
export type EventOf<T extends string, P extends Topic, D> = {
    /**
     * its place in the deployment's stream: contiguous, increasing
     */
    seq: number;
    topic: P;
    type: T;
    /**
     * when it was recorded (RFC 3339)
     */
    at: string;
    data: D;
};
export type OrderChange = {
    order_id: string;
    user_id: string;
    status: OrderStatus;
    previous_status: OrderStatus;
    total_amount: number;
    currency: string;
    updated_at: string;
    version: number;
};
export type OrderCreated = EventOf<"order.created", "orders", Order>;
export type OrderStatusChanged = EventOf<"order.status_changed", "orders", OrderChange>;
export type OrderCancelled = EventOf<"order.cancelled", "orders", OrderChange>;
export type ProductCreated = EventOf<"product.created", "inventory", Product>;
export type ProductUpdated = EventOf<"product.updated", "inventory", Product>;
export type ProductDeleted = EventOf<"product.deleted", "inventory", {
    id: string;
    sku: string;
    deleted_at: string;
    version: number;
}>;
export type StockChanged = EventOf<"inventory.stock_changed", "inventory", {
    product_id: string;
    sku: string;
    stock: number;
    delta: number;
    reason: string;
    version: number;
}>;
/**
 * Staff and admins only.
 */
export type LowStock = EventOf<"inventory.low_stock", "inventory", {
    product_id: string;
    sku: string;
    name: string;
    stock: number;
    low_stock_threshold: number;
    version: number;
}>;
export type NotificationCreated = EventOf<"notification.created", "notifications", Notification>;
/**
 * Notifications were read: `ids` names them (`all` when the user read all at once).
 */
export type NotificationRead = EventOf<"notification.read", "notifications", {
    ids: string[];
    all?: boolean;
    read_at: string;
    version: number;
}>;
export type NotificationDeleted = EventOf<"notification.deleted", "notifications", {
    id: string;
}>;
/**
 * Every event the server sends; narrow it by `type`.
 */
export type TidingsEvent = OrderCreated | OrderStatusChanged | OrderCancelled | ProductCreated | ProductUpdated | ProductDeleted | StockChanged | LowStock | NotificationCreated | NotificationRead | NotificationDeleted;
/**
 * A problem+json body.
 */
export type Problem = {
    type?: string | undefined;
    title?: string | undefined;
    status?: number | undefined;
    detail?: string | undefined;
    code?: string | undefined;
    errors?: {
        field: string;
        code: string;
        message: string;
    }[] | undefined;
};
export type TokenPair = {
    access_token: string;
    refresh_token: string;
    /**
     * seconds, as the server gives it
     */
    expires_in?: number | undefined;
    /**
     * when the access token expires, in ms of this clock
     */
    expires_at?: number | undefined;
    /**
     * the access token's whole life, in ms
     */
    lifetime?: number | undefined;
};
export type Claims = {
    /**
     * the user's id
     */
    sub: string;
    role: Role;
    iat: number;
    exp: number;
};
export type Response = {
    status: number;
    headers: Headers;
    /**
     * the parsed JSON, or null
     */
    body: any;
    /**
     * the `Tidings-Position` header: every event up to this seq is in the body
     */
    position: number | null;
};
export type Status = {
    /**
     *   `offline`: nothing to connect for, or the browser is offline; `stopped`: refused for good (see `error`)
     */
    state: "connecting" | "live" | "reconnecting" | "offline" | "stopped";
    transport: "websocket" | "sse" | null;
    /**
     * events the app had not seen that were replayed after the last
     * (re)connect, before going live (over SSE, which marks no end of the replay: those that came
     * before the stream first paused)
     */
    caughtUp: number;
    /**
     * why it stopped, or the last problem reported by the server
     */
    error: string | null;
};
export type Options = {
    /**
     * where the API is; "" (default) for the page's own origin
     */
    baseUrl?: string | undefined;
    /**
     * `auto` (default): SSE when a WebSocket cannot open
     */
    transport?: "websocket" | "sse" | "auto" | undefined;
    /**
     * cursors and the token pair; default a new MemoryStore
     */
    store?: import("./store.js").Store | undefined;
    /**
     * start signed in with this pair
     */
    tokens?: TokenPair | undefined;
    /**
     * each new pair; null once signed out
     */
    onTokens?: ((pair: TokenPair | null) => void) | undefined;
    /**
     * a WebSocket class (default: the platform's, else the `ws` package)
     */
    WebSocket?: any;
    fetch?: typeof fetch | undefined;
    /**
     * capped exponential with full jitter (500 ms, 30 s)
     */
    backoff?: {
        initialMs?: number;
        maxMs?: number;
    } | undefined;
    /**
     * acknowledge what the handlers finished, so that the user
     * is not pushed what the app already showed (a WebSocket's `{"type":"ack","seq":N}`, an
     * event stream's `POST /v1/events/ack`): `auto` (default) when the server says it takes
     * them (`"acks": true` in `subscribed`, `Tidings-Acks: true` on a stream)
     */
    acks?: boolean | "auto" | undefined;
};
export type SubscribeOptions = {
    /**
     * resume after this seq; null: live only; absent: the store's cursor, else live only
     */
    since?: number | null | undefined;
    /**
     * the server could not resume these topics: reload them over REST
     */
    onReset?: ((topics: string[]) => void) | undefined;
};
