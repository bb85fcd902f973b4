// @tidings/client: the JavaScript client of Tidings (README, "Clients"; the public API is
// what this file exports, with the types of ./events.js).
export { Tidings } from "./client.js";
export { MemoryStore, LocalStorageStore, IndexedDbStore } from "./store.js";
export { TidingsError } from "./errors.js";
export { LiveList } from "./list.js";
export { Subscription } from "./live.js";
/**
 * @typedef {import("./events.js").TidingsEvent} TidingsEvent
 * @typedef {import("./events.js").OrderCreated} OrderCreated
 * @typedef {import("./events.js").OrderStatusChanged} OrderStatusChanged
 * @typedef {import("./events.js").OrderCancelled} OrderCancelled
 * @typedef {import("./events.js").ProductCreated} ProductCreated
 * @typedef {import("./events.js").ProductUpdated} ProductUpdated
 * @typedef {import("./events.js").ProductDeleted} ProductDeleted
 * @typedef {import("./events.js").StockChanged} StockChanged
 * @typedef {import("./events.js").LowStock} LowStock
 * @typedef {import("./events.js").NotificationCreated} NotificationCreated
 * @typedef {import("./events.js").NotificationRead} NotificationRead
 * @typedef {import("./events.js").NotificationDeleted} NotificationDeleted
 * @typedef {import("./events.js").Order} Order
 * @typedef {import("./events.js").Product} Product
 * @typedef {import("./events.js").Notification} Notification
 * @typedef {import("./events.js").Status} Status
 * @typedef {import("./events.js").Options} Options
 * @typedef {import("./events.js").SubscribeOptions} SubscribeOptions
 * @typedef {import("./events.js").TokenPair} TokenPair
 * @typedef {import("./events.js").Response} Response
 * @typedef {import("./events.js").Problem} Problem
 * @typedef {import("./store.js").Store} Store
 */
