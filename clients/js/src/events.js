// Types only (JSDoc, emitted into types/ by tsc): the server's resources and one
// interface per event type of the server, and the SDK's options.
export {};

/** @typedef {"customer" | "staff" | "admin"} Role */
/** @typedef {"pending" | "paid" | "shipped" | "delivered" | "cancelled"} OrderStatus */
/** @typedef {"orders" | "inventory" | "notifications"} Topic */

/**
 * @typedef {object} Product
 * @property {string} id
 * @property {string} sku
 * @property {string} name
 * @property {string} description
 * @property {number} unit_amount price in the currency's minor units
 * @property {string} currency ISO 4217
 * @property {number} stock
 * @property {number} low_stock_threshold
 * @property {string} created_at
 * @property {string} updated_at
 * @property {string | null} deleted_at
 * @property {number} version bumped by every change
 */

/**
 * @typedef {object} OrderItem
 * @property {string} product_id
 * @property {string} sku
 * @property {string} name
 * @property {number} unit_amount
 * @property {number} quantity
 */

/**
 * @typedef {object} Order
 * @property {string} id
 * @property {string} user_id
 * @property {OrderStatus} status
 * @property {string} currency
 * @property {number} total_amount
 * @property {OrderItem[]} items
 * @property {string} created_at
 * @property {string} updated_at
 * @property {number} version
 */

/**
 * @typedef {object} Notification
 * @property {string} id
 * @property {string} user_id
 * @property {"order_status" | "low_stock" | "broadcast"} kind
 * @property {string} title
 * @property {string} body
 * @property {Record<string, unknown>} data
 * @property {string | null} read_at
 * @property {string} created_at
 * @property {number} version 1 while unread, 2 once read
 */

/**
 * What every event carries.
 * @template {string} T @template {Topic} P @template D
 * @typedef {object} EventOf
 * @property {number} seq its place in the deployment's stream: contiguous, increasing
 * @property {P} topic
 * @property {T} type
 * @property {string} at when it was recorded (RFC 3339)
 * @property {D} data
 */

/**
 * @typedef {object} OrderChange
 * @property {string} order_id
 * @property {string} user_id
 * @property {OrderStatus} status
 * @property {OrderStatus} previous_status
 * @property {number} total_amount
 * @property {string} currency
 * @property {string} updated_at
 * @property {number} version
 */

/** @typedef {EventOf<"order.created", "orders", Order>} OrderCreated */
/** @typedef {EventOf<"order.status_changed", "orders", OrderChange>} OrderStatusChanged */
/** @typedef {EventOf<"order.cancelled", "orders", OrderChange>} OrderCancelled */
/** @typedef {EventOf<"product.created", "inventory", Product>} ProductCreated */
/** @typedef {EventOf<"product.updated", "inventory", Product>} ProductUpdated */
/** @typedef {EventOf<"product.deleted", "inventory", { id: string, sku: string, deleted_at: string, version: number }>} ProductDeleted */
/**
 * @typedef {EventOf<"inventory.stock_changed", "inventory",
 *   { product_id: string, sku: string, stock: number, delta: number, reason: string, version: number }>} StockChanged
 */
/**
 * Staff and admins only.
 * @typedef {EventOf<"inventory.low_stock", "inventory",
 *   { product_id: string, sku: string, name: string, stock: number, low_stock_threshold: number, version: number }>} LowStock
 */
/** @typedef {EventOf<"notification.created", "notifications", Notification>} NotificationCreated */
/**
 * Notifications were read: `ids` names them (`all` when the user read all at once).
 * @typedef {EventOf<"notification.read", "notifications", { ids: string[], all?: boolean, read_at: string, version: number }>} NotificationRead
 */
/** @typedef {EventOf<"notification.deleted", "notifications", { id: string }>} NotificationDeleted */

/**
 * Every event the server sends; narrow it by `type`.
 * @typedef {OrderCreated | OrderStatusChanged | OrderCancelled | ProductCreated | ProductUpdated | ProductDeleted
 *   | StockChanged | LowStock | NotificationCreated | NotificationRead | NotificationDeleted} TidingsEvent
 */

/**
 * A problem+json body.
 * @typedef {object} Problem
 * @property {string} [type]
 * @property {string} [title]
 * @property {number} [status]
 * @property {string} [detail]
 * @property {string} [code]
 * @property {Array<{ field: string, code: string, message: string }>} [errors]
 */

/**
 * @typedef {object} TokenPair
 * @property {string} access_token
 * @property {string} refresh_token
 * @property {number} [expires_in] seconds, as the server gives it
 * @property {number} [expires_at] when the access token expires, in ms of this clock
 * @property {number} [lifetime] the access token's whole life, in ms
 */

/**
 * @typedef {object} Claims
 * @property {string} sub the user's id
 * @property {Role} role
 * @property {number} iat
 * @property {number} exp
 */

/**
 * @typedef {object} Response
 * @property {number} status
 * @property {Headers} headers
 * @property {any} body the parsed JSON, or null
 * @property {number | null} position the `Tidings-Position` header: every event up to this seq is in the body
 */

/**
 * @typedef {object} Status
 * @property {"connecting" | "live" | "reconnecting" | "offline" | "stopped"} state
 *   `offline`: nothing to connect for, or the browser is offline; `stopped`: refused for good (see `error`)
 * @property {"websocket" | "sse" | null} transport
 * @property {number} caughtUp events the app had not seen that were replayed after the last
 *   (re)connect, before going live (over SSE, which marks no end of the replay: those that came
 *   before the stream first paused)
 * @property {string | null} error why it stopped, or the last problem reported by the server
 */

/**
 * @typedef {object} Options
 * @property {string} [baseUrl] where the API is; "" (default) for the page's own origin
 * @property {"websocket" | "sse" | "auto"} [transport] `auto` (default): SSE when a WebSocket cannot open
 * @property {import("./store.js").Store} [store] cursors and the token pair; default a new MemoryStore
 * @property {TokenPair} [tokens] start signed in with this pair
 * @property {(pair: TokenPair | null) => void} [onTokens] each new pair; null once signed out
 * @property {any} [WebSocket] a WebSocket class (default: the platform's, else the `ws` package)
 * @property {typeof fetch} [fetch]
 * @property {{ initialMs?: number, maxMs?: number }} [backoff] capped exponential with full jitter (500 ms, 30 s)
 * @property {boolean | "auto"} [acks] acknowledge what the handlers finished, so that the user
 *   is not pushed what the app already showed (a WebSocket's `{"type":"ack","seq":N}`, an
 *   event stream's `POST /v1/events/ack`): `auto` (default) when the server says it takes
 *   them (`"acks": true` in `subscribed`, `Tidings-Acks: true` on a stream)
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {number | null} [since] resume after this seq; null: live only; absent: the store's cursor, else live only
 * @property {(topics: string[]) => void} [onReset] the server could not resume these topics: reload them over REST
 */
