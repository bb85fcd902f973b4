// The staff's orders board: one column per status, a card per order, kept current by the
// SDK's live list (snapshot, then the stream). Buttons drive the order's state machine
// (README, "The API"): staff move an order one step along pending → paid → shipped →
// delivered, and may cancel it while it is pending or paid. A card moves when the change's
// event arrives, whoever made it.

import { announce, byId, describe, el, money, orderName, time } from "./ui.js";

/** @typedef {import("./sdk/index.js").Tidings} Tidings */
/**
 * An order as the list holds it (`items` may be absent from a partial update).
 * @typedef {{ id: string, status: string, total_amount: number, currency: string,
 *   created_at: string, version: number,
 *   items?: { name: string, quantity: number }[] }} Order
 */

/** The board's columns, in order. */
export const COLUMNS = ["pending", "paid", "shipped", "delivered"];

/** @type {Record<string, string>} */
const NEXT = { pending: "paid", paid: "shipped", shipped: "delivered" };

/**
 * Shows the board and keeps it current until the returned function is called.
 * @param {Tidings} tidings
 * @returns {() => void}
 */
export function startBoard(tidings) {
  const board = byId("board");
  const error = byId("board-error");
  const cancelledNote = byId("cancelled-count");
  /** @type {Map<string, { card: HTMLElement, status: string, version: number }>} */
  const shown = new Map();
  /** The order whose card should take the focus once it has moved (after its button). */
  let focusAfterMove = /** @type {string | null} */ (null);
  let loaded = false;

  const list = tidings.live.list("orders", { limit: 100 });

  /** @param {Order[]} orders */
  function render(orders) {
    const visible = orders
      .filter((order) => COLUMNS.includes(order.status))
      .sort((a, b) => b.created_at.localeCompare(a.created_at));
    const seen = new Set();
    for (const order of visible) {
      seen.add(order.id);
      const before = shown.get(order.id);
      if (before && before.version === order.version && before.status === order.status) continue;
      const card = cardFor(order);
      if (before) before.card.replaceWith(card);
      shown.set(order.id, { card, status: order.status, version: order.version });
      if (loaded && before?.status !== order.status) {
        card.classList.add("fresh");
        announce(before
          ? `Order ${orderName(order.id)} is now ${order.status}.`
          : `New order ${orderName(order.id)}, ${money(order.total_amount, order.currency)}.`);
      }
    }
    for (const [id, { card }] of shown) {
      if (!seen.has(id)) {
        card.remove();
        shown.delete(id);
      }
    }
    // Place every card in its column, newest first (appending moves a node that is in place).
    for (const status of COLUMNS) {
      const column = /** @type {HTMLElement} */ (board.querySelector(`.column[data-status="${status}"]`));
      const cards = /** @type {HTMLElement} */ (column.querySelector(".cards"));
      const inColumn = visible.filter((order) => order.status === status);
      inColumn.forEach((order, index) => {
        const card = /** @type {{ card: HTMLElement }} */ (shown.get(order.id)).card;
        if (cards.children[index] !== card) cards.insertBefore(card, cards.children[index] ?? null);
      });
      /** @type {HTMLElement} */ (column.querySelector(".count")).textContent = String(inColumn.length);
    }
    const cancelled = orders.filter((order) => order.status === "cancelled").length;
    cancelledNote.textContent = cancelled ? `${cancelled} cancelled ${cancelled === 1 ? "order" : "orders"} not shown.` : "";
    if (focusAfterMove && shown.has(focusAfterMove)) {
      const { card } = /** @type {{ card: HTMLElement }} */ (shown.get(focusAfterMove));
      if (!card.contains(document.activeElement)) {
        /** @type {HTMLElement} */ (card.querySelector("button") ?? card).focus();
        focusAfterMove = null;
      }
    }
  }

  /**
   * A card for the order as it is now.
   * @param {Order} order
   */
  function cardFor(order) {
    const name = orderName(order.id);
    const items = (order.items ?? []).map((item) => `${item.quantity} × ${item.name}`).join(", ");
    const actions = el("div", { class: "actions" });
    const next = NEXT[order.status];
    if (next) {
      actions.append(button(`Mark ${next}`, name, "", () =>
        tidings.post(`/v1/orders/${order.id}/status`, { status: next })));
    }
    if (order.status === "pending" || order.status === "paid") {
      actions.append(button("Cancel", name, "danger", () =>
        tidings.post(`/v1/orders/${order.id}/cancel`, {})));
    }
    return el("li", {
      class: "card", tabindex: "-1", "data-order-id": order.id, "data-status": order.status,
      "data-version": String(order.version), "aria-label": `Order ${name}`,
    },
      el("div", { class: "top" }, el("span", { class: "id" }, name),
        el("span", { class: "total" }, money(order.total_amount, order.currency))),
      items ? el("p", { class: "items" }, items) : null,
      time(order.created_at),
      actions.childElementCount ? actions : null);

    /**
     * @param {string} label
     * @param {string} orderLabel
     * @param {string} style
     * @param {() => Promise<unknown>} act
     */
    function button(label, orderLabel, style, act) {
      const b = el("button", { type: "button", class: style || undefined },
        label, el("span", { class: "visually-hidden" }, ` order ${orderLabel}`));
      b.addEventListener("click", async () => {
        // Disabled until the change's event moves the card (a new card, new buttons).
        for (const other of b.parentElement?.querySelectorAll("button") ?? []) {
          /** @type {HTMLButtonElement} */ (other).disabled = true;
        }
        focusAfterMove = order.id;
        error.textContent = "";
        try {
          await act();
        } catch (e) {
          error.textContent = `${label} ${orderLabel}: ${describe(e)}`;
          focusAfterMove = null;
          for (const other of b.parentElement?.querySelectorAll("button") ?? []) {
            /** @type {HTMLButtonElement} */ (other).disabled = false;
          }
          b.focus();
        }
      });
      return b;
    }
  }

  const stop = list.onChange((items) => render(/** @type {Order[]} */ (items)));
  list.ready.then(
    () => { render(/** @type {Order[]} */ (list.items)); loaded = true; board.setAttribute("aria-busy", "false"); },
    (e) => { error.textContent = `The orders could not be loaded: ${describe(e)}`; },
  );
  board.setAttribute("aria-busy", "true");

  return () => {
    stop();
    list.close();
    for (const { card } of shown.values()) card.remove();
    shown.clear();
    error.textContent = "";
    cancelledNote.textContent = "";
  };
}
