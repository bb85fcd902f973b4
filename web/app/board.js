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
 *
 * Each column is a live list of its own (`status=…`), so that a column can be capped
 * without cutting the others: the active orders are work to do, the delivered ones history.
 * An order that moves leaves one list and is fetched by the next.
 * @param {Tidings} tidings
 * @returns {() => void}
 */
export function startBoard(tidings) {
  const board = byId("board");
  const error = byId("board-error");
  /** The status each order was last shown in, to tell a move from an arrival. @type {Map<string, string>} */
  const known = new Map();
  /** The order whose card should take the focus once it has moved (after its button). */
  let focusAfterMove = /** @type {string | null} */ (null);
  let loaded = false;

  const columns = COLUMNS.map((status) => {
    const element = /** @type {HTMLElement} */ (board.querySelector(`.column[data-status="${status}"]`));
    return {
      status,
      cards: /** @type {HTMLElement} */ (element.querySelector(".cards")),
      count: /** @type {HTMLElement} */ (element.querySelector(".count")),
      list: tidings.live.list("orders", { status, limit: 100 }),
      /** @type {Map<string, { card: HTMLElement, version: number }>} */
      shown: new Map(),
    };
  });

  /**
   * @param {typeof columns[number]} column
   * @param {Order[]} orders the column's orders, newest first
   */
  function render(column, orders) {
    const { cards, shown, status } = column;
    const ids = new Set(orders.map((order) => order.id));
    for (const [id, { card }] of shown) {
      if (!ids.has(id)) {
        card.remove();
        shown.delete(id);
      }
    }
    orders.forEach((order, index) => {
      const before = shown.get(order.id);
      let card = before?.card;
      if (!card || before?.version !== order.version) {
        const fresh = cardFor(order);
        // Someone else changed the order while it had the focus: the focus stays on it.
        const focused = card?.contains(document.activeElement);
        card?.replaceWith(fresh);
        card = fresh;
        shown.set(order.id, { card, version: order.version });
        if (focused) card.focus();
      }
      if (cards.children[index] !== card) cards.insertBefore(card, cards.children[index] ?? null);
      const was = known.get(order.id);
      if (loaded && was !== status) {
        card.classList.add("fresh");
        announce(was
          ? `Order ${orderName(order.id)} is now ${status}.`
          : `New order ${orderName(order.id)}, ${money(order.total_amount, order.currency)}.`);
      }
      known.set(order.id, status);
      if (focusAfterMove === order.id && was !== status) {
        /** @type {HTMLElement} */ (card.querySelector("button") ?? card).focus();
        focusAfterMove = null;
      }
    });
    column.count.textContent = String(orders.length);
  }

  const stops = columns.map((column) =>
    column.list.onChange((items) => render(column, /** @type {Order[]} */ (items))));
  board.setAttribute("aria-busy", "true");
  Promise.all(columns.map(async (column) => {
    await column.list.ready;
    render(column, /** @type {Order[]} */ (column.list.items));
  })).then(
    () => { loaded = true; board.setAttribute("aria-busy", "false"); },
    (e) => { error.textContent = `The orders could not be loaded: ${describe(e)}`; },
  );

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

  return () => {
    stops.forEach((stop) => stop());
    for (const column of columns) {
      column.list.close();
      column.cards.replaceChildren();
      column.count.textContent = "0";
    }
    error.textContent = "";
  };
}
