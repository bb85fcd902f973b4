// The catalog's stock, for staff: every product with its stock and its alert threshold,
// kept current by the SDK's live list. A product at or below its threshold is flagged in
// its row and listed in the alert above the table, which screen readers announce as it
// changes: a warning appears as the stock falls, not at the next reload.

import { byId, describe, el } from "./ui.js";

/** @typedef {import("./sdk/index.js").Tidings} Tidings */
/**
 * @typedef {{ id: string, sku: string, name: string, stock: number,
 *   low_stock_threshold: number, deleted_at?: string | null, version: number }} Product
 */

/**
 * Shows the stock and keeps it current until the returned function is called.
 * @param {Tidings} tidings
 * @returns {() => void}
 */
export function startStock(tidings) {
  const rows = byId("stock-rows");
  const warnings = byId("low-stock");
  const list = tidings.live.list("products", { limit: 100, sort: "name" });
  /** The products last shown as low, by id: a warning is written when one is added. */
  let low = new Map();

  /** @param {Product[]} products */
  function render(products) {
    const shown = products
      .filter((product) => !product.deleted_at)
      .sort((a, b) => a.name.localeCompare(b.name));
    rows.replaceChildren(...shown.map((product) => {
      const isLow = product.stock <= product.low_stock_threshold;
      return el("tr", { class: isLow ? "low" : undefined, "data-product-id": product.id, "data-sku": product.sku },
        el("td", {}, product.name,
          isLow ? el("span", { class: "flag" }, "Low") : null,
          el("span", { class: "sku" }, product.sku)),
        el("td", { class: "num stock-count" }, String(product.stock)),
        el("td", { class: "num" }, String(product.low_stock_threshold)));
    }));
    const nowLow = new Map(shown
      .filter((product) => product.stock <= product.low_stock_threshold)
      .map((product) => [product.id, product]));
    // Rewritten only when the set of low products or their counts change, as each rewrite
    // of an alert is read out.
    const key = (/** @type {Map<string, Product>} */ m) =>
      [...m.values()].map((p) => `${p.id}:${p.stock}`).sort().join();
    if (key(nowLow) !== key(low)) {
      warnings.replaceChildren(...[...nowLow.values()].map((product) =>
        el("p", { "data-product-id": product.id },
          `Low stock: ${product.name} (${product.sku}), ${product.stock} left; alert at ${product.low_stock_threshold}.`)));
    }
    low = nowLow;
  }

  const stop = list.onChange((items) => render(/** @type {Product[]} */ (items)));
  list.ready.then(
    () => render(/** @type {Product[]} */ (list.items)),
    (e) => { warnings.replaceChildren(el("p", {}, `The stock could not be loaded: ${describe(e)}`)); },
  );

  return () => {
    stop();
    list.close();
    rows.replaceChildren();
    warnings.replaceChildren();
  };
}
