// Web Push for the signed-in user, from the notifications panel: "Enable push
// notifications" asks the browser's permission, registers the service worker (sw.js, which
// shows what arrives while no tab is open), subscribes with the server's VAPID key and
// registers the subscription as a device of the user's (POST /v1/me/devices); "Disable"
// removes the device and ends the subscription, as signing out does. Shown only where the
// browser has Web Push (a secure context: https, or http on localhost).

import { announce, byId, describe } from "./ui.js";

/** @typedef {import("./sdk/index.js").Tidings} Tidings */
/** @typedef {{ id: string, kind: string, endpoint?: string }} Device */

/** The service worker's URL and scope, relative to the page (/app/). */
const WORKER = "sw.js";
const SCOPE = "./";

const MESSAGES = {
  on: "Push notifications are on in this browser: they arrive while the dashboard is closed.",
  off: "Get notifications in this browser while the dashboard is closed.",
  denied: "Notifications are blocked for this site. Allow them in the browser's site settings, then try again.",
  dismissed: "Push notifications were not enabled: the browser was not given permission to show notifications.",
  unavailable: "This browser has no push service to deliver notifications (it may be offline, or push may be turned off in its settings).",
};

/** The page's one Trusted Types policy, made at the first registration. @type {any} */
let policy = null;

/**
 * The script URL to register, as a Trusted Types policy of its own makes it: the page's
 * policy (`require-trusted-types-for 'script'`) takes no plain string for a worker's script,
 * and this policy, the only one the page may create, passes this one URL alone.
 * @returns {string}
 */
function workerUrl() {
  const types = /** @type {any} */ (window).trustedTypes;
  if (!types) return WORKER;
  policy ??= types.createPolicy("tidings-service-worker", {
    /** @param {string} url */
    createScriptURL: (url) => {
      if (url !== WORKER) throw new TypeError(`not the dashboard's service worker: ${url}`);
      return url;
    },
  });
  return policy.createScriptURL(WORKER);
}

/** Whether the browser can subscribe to Web Push here. */
export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

/**
 * Ends this browser's push for the signed-in user, as they sign out: a browser someone else
 * may use next must not keep showing a signed-out user's notifications. Removes the device
 * and ends the subscription if they are this user's; the caller ignores a failure (the
 * session may be over already).
 * @param {Tidings} tidings
 */
export async function endPush(tidings) {
  if (!pushSupported()) return;
  const registration = await navigator.serviceWorker.getRegistration(SCOPE);
  const current = await registration?.pushManager.getSubscription();
  if (!current) return;
  const devices = /** @type {Device[]} */ (await tidings.get("/v1/me/devices"));
  const device = devices.find((d) => d.kind === "webpush" && d.endpoint === current.endpoint);
  if (!device) return;
  await tidings.delete(`/v1/me/devices/${device.id}`);
  await current.unsubscribe();
}

/**
 * Shows the push controls and keeps them current until the returned function is called.
 * @param {Tidings} tidings
 * @returns {() => void}
 */
export function startPush(tidings) {
  const area = byId("push");
  const message = byId("push-message");
  const enable = /** @type {HTMLButtonElement} */ (byId("push-enable"));
  const disable = /** @type {HTMLButtonElement} */ (byId("push-disable"));
  if (!pushSupported()) {
    area.hidden = true;
    return () => {};
  }
  let stopped = false;
  /** The device this browser's subscription is registered as, if any. @type {string | null} */
  let deviceId = null;

  /**
   * @param {"on" | "off"} state
   * @param {string} [text] instead of the state's own message
   */
  function show(state, text) {
    if (stopped) return;
    area.hidden = false;
    area.dataset.state = state;
    enable.hidden = state === "on";
    disable.hidden = state === "off";
    message.textContent = text ?? MESSAGES[state];
  }

  /** The subscription this browser holds for the dashboard, if any. */
  async function subscription() {
    const registration = await navigator.serviceWorker.getRegistration(SCOPE);
    return (await registration?.pushManager.getSubscription()) ?? null;
  }

  /** Whether this browser's subscription is a device of the signed-in user. */
  async function check() {
    const current = await subscription();
    const devices = current ? /** @type {Device[]} */ (await tidings.get("/v1/me/devices")) : [];
    deviceId = devices.find((d) => d.kind === "webpush" && d.endpoint === current?.endpoint)?.id ?? null;
    show(deviceId ? "on" : "off");
  }

  async function turnOn() {
    const permission = await Notification.requestPermission();
    if (permission !== "granted") {
      show("off", permission === "denied" ? MESSAGES.denied : MESSAGES.dismissed);
      return;
    }
    await navigator.serviceWorker.register(workerUrl(), { scope: SCOPE });
    // Subscribing needs an active worker: `ready` waits for it.
    const registration = await navigator.serviceWorker.ready;
    const { public_key: key } = /** @type {{ public_key: string }} */ (await tidings.get("/v1/push/vapid-public-key"));
    const options = { userVisibleOnly: true, applicationServerKey: key };
    let pushSubscription;
    try {
      pushSubscription = await registration.pushManager.subscribe(options);
    } catch (e) {
      // A subscription made with another key (the server's was replaced) must end first.
      const old = await registration.pushManager.getSubscription();
      if (!(e instanceof DOMException && e.name === "InvalidStateError" && old)) throw e;
      await old.unsubscribe();
      pushSubscription = await registration.pushManager.subscribe(options);
    }
    const device = /** @type {Device} */ (await tidings.post("/v1/me/devices", { kind: "webpush", ...pushSubscription.toJSON() }));
    deviceId = device.id;
    show("on");
    announce("Push notifications are on.");
  }

  async function turnOff() {
    if (deviceId) {
      try {
        await tidings.delete(`/v1/me/devices/${deviceId}`);
      } catch (e) {
        // Gone already (removed elsewhere, or by the server when the push service said so).
        if (/** @type {{ status?: number }} */ (e).status !== 404) throw e;
      }
      deviceId = null;
    }
    await (await subscription())?.unsubscribe();
    show("off");
    announce("Push notifications are off.");
  }

  /** @param {() => Promise<void>} action */
  async function run(action) {
    enable.disabled = disable.disabled = true;
    try {
      await action();
    } catch (e) {
      // Chromium without its push service (offline, or a build without one) says AbortError.
      const name = e instanceof DOMException ? e.name : "";
      show(deviceId ? "on" : "off", name === "AbortError" || name === "NotSupportedError"
        ? MESSAGES.unavailable
        : `Push notifications could not be changed: ${describe(e)}`);
    } finally {
      enable.disabled = disable.disabled = false;
    }
  }

  const onEnable = () => run(turnOn);
  const onDisable = () => run(turnOff);
  enable.addEventListener("click", onEnable);
  disable.addEventListener("click", onDisable);
  check().catch((e) => show("off", `Push notifications could not be checked: ${describe(e)}`));

  return () => {
    stopped = true;
    area.hidden = true;
    enable.removeEventListener("click", onEnable);
    disable.removeEventListener("click", onDisable);
  };
}
