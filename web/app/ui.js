// Small DOM helpers shared by the dashboard's parts. Text from the API only ever becomes
// text nodes (never markup), which the page's Trusted Types policy enforces as well.

/**
 * An element with attributes and children (strings become text).
 * @param {string} tag
 * @param {Record<string, string | boolean | undefined>} [attributes]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElement}
 */
export function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === false) continue;
    element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) element.append(child);
  }
  return element;
}

/**
 * The element with this id, which the page must have.
 * @template {HTMLElement} T
 * @param {string} id
 * @returns {T}
 */
export function byId(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return /** @type {T} */ (element);
}

/** @type {Map<string, Intl.NumberFormat>} */
const moneyFormats = new Map();

/**
 * An amount in a currency's minor units (cents), formatted for the reader.
 * @param {number} minor
 * @param {string} currency ISO 4217
 */
export function money(minor, currency) {
  let format = moneyFormats.get(currency);
  if (!format) {
    format = new Intl.NumberFormat(undefined, { style: "currency", currency });
    moneyFormats.set(currency, format);
  }
  const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
  return format.format(minor / 10 ** digits);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/**
 * A `<time>` for an RFC 3339 instant: the time alone today, else the date too.
 * @param {string} iso
 */
export function time(iso) {
  const at = new Date(iso);
  const today = at.toDateString() === new Date().toDateString();
  return el("time", { datetime: iso }, (today ? timeFormat : dateFormat).format(at));
}

/**
 * The short name of an order: the last six characters of its id (a UUIDv7 begins with its
 * creation time, so orders placed together share their first characters).
 * @param {string} id
 */
export function orderName(id) {
  return `#${id.slice(-6)}`;
}

/**
 * Reads a message to screen reader users (the page's polite live region).
 * @param {string} message
 */
export function announce(message) {
  const region = byId("announcer");
  // A change of text is what is announced: clear first, so a repeat is read again.
  region.textContent = "";
  requestAnimationFrame(() => { region.textContent = message; });
}

/**
 * A message for an error of the API or of the network.
 * @param {unknown} error
 */
export function describe(error) {
  if (error && typeof error === "object") {
    const problem = /** @type {{ problem?: { detail?: string, title?: string } }} */ (error).problem;
    if (problem?.detail) return problem.detail;
    if (problem?.title) return problem.title;
    if ("message" in error && typeof error.message === "string") return error.message;
  }
  return String(error);
}
