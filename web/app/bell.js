// The notification bell: the count of unread notifications on the button, and the latest
// ones in a panel it opens, kept current by the SDK's live list. Reading one (or all) goes
// through the API; the `notification.read` event then updates every open tab.

import { announce, byId, describe, el, time } from "./ui.js";

/** @typedef {import("./sdk/index.js").Tidings} Tidings */
/**
 * @typedef {{ id: string, kind: string, title: string, body: string,
 *   read_at: string | null, created_at: string }} Notification
 */

/**
 * Shows the bell and keeps it current until the returned function is called.
 * @param {Tidings} tidings
 * @returns {() => void}
 */
export function startBell(tidings) {
  const bell = byId("bell");
  const badge = byId("unread");
  const panel = byId("notifications");
  const listElement = byId("notification-list");
  const empty = byId("notifications-empty");
  const readAll = /** @type {HTMLButtonElement} */ (byId("read-all"));
  const list = tidings.live.list("notifications", { limit: 50 });
  /** @type {Set<string>} */
  let known = new Set();
  let loaded = false;

  /** @param {Notification[]} notifications */
  function render(notifications) {
    const sorted = [...notifications].sort((a, b) => b.created_at.localeCompare(a.created_at));
    const unread = sorted.filter((n) => !n.read_at).length;
    badge.textContent = String(unread);
    badge.hidden = unread === 0;
    bell.setAttribute("aria-label", unread ? `Notifications, ${unread} unread` : "Notifications");
    readAll.disabled = unread === 0;
    empty.hidden = sorted.length > 0;
    // The focus is kept on the notification it was in (or, once read, on the panel).
    const focused = document.activeElement?.closest("[data-notification-id]")?.getAttribute("data-notification-id");
    listElement.replaceChildren(...sorted.map(item));
    if (focused) {
      const button = listElement.querySelector(`[data-notification-id="${focused}"] button`);
      /** @type {HTMLElement} */ (button ?? byId("notifications-title")).focus();
    }
    if (loaded) {
      for (const n of sorted) if (!known.has(n.id) && !n.read_at) announce(`Notification: ${n.title}`);
    }
    known = new Set(sorted.map((n) => n.id));
  }

  /** @param {Notification} n */
  function item(n) {
    let markRead = null;
    if (!n.read_at) {
      markRead = el("button", { type: "button", class: "quiet" }, "Mark read",
        el("span", { class: "visually-hidden" }, `: ${n.title}`));
      markRead.addEventListener("click", () => act(() => tidings.post(`/v1/notifications/${n.id}/read`, {})));
    }
    return el("li", { "data-notification-id": n.id, "data-kind": n.kind, "data-unread": !n.read_at },
      el("span", { class: "title" }, n.title),
      el("span", { class: "body" }, n.body),
      time(n.created_at),
      markRead);
  }

  /** @param {() => Promise<unknown>} request */
  async function act(request) {
    try {
      await request();
    } catch (e) {
      announce(`Could not mark as read: ${describe(e)}`);
    }
  }

  function toggle(open = panel.hidden) {
    panel.hidden = !open;
    bell.setAttribute("aria-expanded", String(open));
    if (open) byId("notifications-title").focus();
  }
  const onBell = () => toggle();
  const onReadAll = () => act(() => tidings.post("/v1/notifications/read-all", {}));
  /** @param {KeyboardEvent} event */
  const onKey = (event) => {
    if (event.key === "Escape" && !panel.hidden) {
      toggle(false);
      bell.focus();
    }
  };
  bell.addEventListener("click", onBell);
  readAll.addEventListener("click", onReadAll);
  document.addEventListener("keydown", onKey);

  const stop = list.onChange((items) => render(/** @type {Notification[]} */ (items)));
  list.ready.then(
    () => { render(/** @type {Notification[]} */ (list.items)); loaded = true; },
    (e) => announce(`Notifications could not be loaded: ${describe(e)}`),
  );

  return () => {
    stop();
    list.close();
    toggle(false);
    bell.removeEventListener("click", onBell);
    readAll.removeEventListener("click", onReadAll);
    document.removeEventListener("keydown", onKey);
    listElement.replaceChildren();
    badge.hidden = true;
  };
}
