// A customer's own orders, with where each one is on its way, kept current by the SDK's
// live list (a customer receives the events of their own orders only). An order can be
// cancelled by its owner while it is pending or paid.

import { announce, byId, describe, el, money, orderName, time } from "./ui.js";
import { COLUMNS } from "./board.js";

/** @typedef {import("./sdk/index.js").Tidings} Tidings */
/** @typedef {import("./board.js").Order} Order */

/**
 * Shows the customer's orders and keeps them current until the returned function is called.
 * @param {Tidings} tidings
 * @returns {() => void}
 */
export function startMyOrders(tidings) {
  const listElement = byId("my-orders");
  const empty = byId("my-orders-empty");
  const error = byId("customer-error");
  const list = tidings.live.list("orders", { limit: 50 });
  /** @type {Map<string, string>} the status last shown, by order */
  const statuses = new Map();
  let loaded = false;

  /** @param {Order[]} orders */
  function render(orders) {
    const sorted = [...orders].sort((a, b) => b.created_at.localeCompare(a.created_at));
    const focused = document.activeElement?.closest("[data-order-id]")?.getAttribute("data-order-id");
    listElement.replaceChildren(...sorted.map(card));
    empty.hidden = sorted.length > 0;
    for (const order of sorted) {
      const before = statuses.get(order.id);
      if (loaded && before !== order.status) {
        announce(before ? `Your order ${orderName(order.id)} is now ${order.status}.` : `Order ${orderName(order.id)} placed.`);
      }
      statuses.set(order.id, order.status);
    }
    if (focused) {
      /** @type {HTMLElement | null} */ (listElement.querySelector(`[data-order-id="${focused}"]`))?.focus();
    }
  }

  /** @param {Order} order */
  function card(order) {
    const name = orderName(order.id);
    const step = COLUMNS.indexOf(order.status);
    const steps = order.status === "cancelled" ? null : el("ol", { class: "steps", "aria-label": "Progress" },
      ...COLUMNS.map((status, i) => el("li", {
        class: i < step ? "done" : undefined,
        "aria-current": i === step ? "step" : undefined,
      }, status)));
    const items = (order.items ?? []).map((item) => `${item.quantity} × ${item.name}`).join(", ");
    /** @type {HTMLButtonElement | null} */
    let cancel = null;
    if (order.status === "pending" || order.status === "paid") {
      const button = /** @type {HTMLButtonElement} */ (el("button", { type: "button", class: "danger" }, "Cancel",
        el("span", { class: "visually-hidden" }, ` order ${name}`)));
      cancel = button;
      button.addEventListener("click", async () => {
        button.disabled = true;
        error.textContent = "";
        try {
          await tidings.post(`/v1/orders/${order.id}/cancel`, {});
        } catch (e) {
          error.textContent = `Cancel ${name}: ${describe(e)}`;
          button.disabled = false;
        }
      });
    }
    return el("li", { class: "card", tabindex: "-1", "data-order-id": order.id, "data-status": order.status },
      el("div", { class: "top" },
        el("span", { class: "id" }, `Order ${name}`),
        el("span", { class: "status-badge", "data-status": order.status }, order.status)),
      steps,
      items ? el("p", { class: "items" }, items) : null,
      el("div", { class: "top" }, time(order.created_at),
        el("span", { class: "total" }, money(order.total_amount, order.currency))),
      cancel ? el("div", { class: "actions" }, cancel) : null);
  }

  const stop = list.onChange((items) => render(/** @type {Order[]} */ (items)));
  list.ready.then(
    () => { render(/** @type {Order[]} */ (list.items)); loaded = true; },
    (e) => { error.textContent = `Your orders could not be loaded: ${describe(e)}`; },
  );

  return () => {
    stop();
    list.close();
    listElement.replaceChildren();
    error.textContent = "";
  };
}
