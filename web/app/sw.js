// The dashboard's service worker (registered by push.js with the scope /app/): it shows the
// notifications that arrive by Web Push while no tab of the dashboard is open, and a click
// on one brings the dashboard back. It fetches nothing and caches nothing: the page keeps
// loading from the server as before.
//
// A push message is the live event exactly as a connected client receives it (README, "Push
// delivery"): `{seq, topic, type, at, data}`, for `notification.created` with `data`
// holding the notification's `id`, `kind`, `title` and `body`.

const worker = /** @type {ServiceWorkerGlobalScope} */ (/** @type {unknown} */ (self));

/**
 * @typedef {{ seq?: number, topic?: string, type?: string, at?: string,
 *   data?: { id?: string, kind?: string, title?: string, body?: string } }} Envelope
 */

// A new version of this file takes over at once: it holds no state an older one relies on.
worker.addEventListener("install", () => {
  void worker.skipWaiting();
});

worker.addEventListener("push", (event) => {
  event.waitUntil(show(event.data));
});

worker.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openDashboard());
});

/**
 * Shows the notification a push message carries. Every message shows one (the browser asks
 * that of a subscription with `userVisibleOnly`): one that is not a notification, or not
 * readable, shows a plain "something changed".
 * @param {PushMessageData | null} message
 */
async function show(message) {
  /** @type {Envelope | null} */
  let envelope = null;
  try {
    envelope = message ? message.json() : null;
  } catch {
    // Not JSON: shown as the plain notice below.
  }
  const notification = envelope?.type === "notification.created" ? envelope.data : undefined;
  if (notification && typeof notification.title === "string") {
    await worker.registration.showNotification(notification.title, {
      body: notification.body ?? "",
      // The same notification sent twice (a retry) replaces the first instead of adding one.
      tag: notification.id,
      icon: "icon.svg",
      data: { id: notification.id, kind: notification.kind, seq: envelope?.seq, topic: envelope?.topic },
    });
    return;
  }
  await worker.registration.showNotification("Tidings", {
    body: "Something changed: open the dashboard to see it.",
    tag: "tidings",
    icon: "icon.svg",
  });
}

/** Focuses a tab of the dashboard if one is open, else opens one. */
async function openDashboard() {
  const scope = worker.registration.scope;
  const windows = await worker.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((client) => client.url.startsWith(scope));
  if (open) {
    await open.focus();
    return;
  }
  await worker.clients.openWindow(scope);
}
