// The Tidings dashboard: sign in, then, for staff and admins, the live orders board, the
// stock and the notification bell; for a customer, their orders and notifications. All of
// it goes through the SDK (served at ./sdk/ from clients/js/src): REST, tokens, the live
// connection and its status, and the live lists.
//
// Tokens are kept as the SDK keeps them: in its store, here a LocalStorageStore, so under
// "tidings:tokens" in localStorage (with the cursors, "tidings:cursor:<topic>"). A reload or
// a second tab stays signed in, and the tabs share one pair: the SDK refreshes under a Web
// Lock and takes a pair another tab has already rotated, so no spent refresh token is ever
// presented. The page's policy (CSP with Trusted Types) leaves injected script no way to run
// and read it.

import { LocalStorageStore, Tidings } from "./sdk/index.js";
import { emailRoute, showReset, showVerify, startForgot } from "./account.js";
import { startBell } from "./bell.js";
import { startBoard } from "./board.js";
import { startMyOrders } from "./orders.js";
import { endPush, startPush } from "./push.js";
import { startStock } from "./stock.js";
import { byId, describe } from "./ui.js";

/** @typedef {import("./sdk/index.js").Status} Status */

const tidings = new Tidings({
  baseUrl: "",
  transport: "auto",
  store: new LocalStorageStore("tidings:"),
});

/** What is running for the signed-in user; each part returns its own stop. */
let running = /** @type {(() => void)[]} */ ([]);

const connection = byId("connection");

/** @param {Status} status */
function showStatus(status) {
  connection.dataset.state = status.state;
  const text = /** @type {HTMLElement} */ (connection.querySelector(".text"));
  switch (status.state) {
    case "live":
      text.textContent = status.caughtUp > 0
        ? `Live · caught up ${status.caughtUp} ${status.caughtUp === 1 ? "event" : "events"}`
        : "Live";
      break;
    case "connecting": text.textContent = "Connecting…"; break;
    case "reconnecting": text.textContent = "Reconnecting…"; break;
    case "offline": text.textContent = "Offline"; break;
    default: text.textContent = "Disconnected";
  }
  connection.title = status.transport ? `over ${status.transport === "sse" ? "Server-Sent Events" : "WebSocket"}` : "";
  // The session is over (refresh token rejected, account disabled): back to signing in.
  if (status.state === "stopped" && !tidings.me) signedOut("Your session has ended. Please sign in again.");
}

function signedIn() {
  const me = tidings.me;
  if (!me) return signedOut();
  const staff = me.role === "staff" || me.role === "admin";
  byId("sign-in").hidden = true;
  byId("reset").hidden = true;
  byId("verify").hidden = true;
  byId("account").hidden = false;
  connection.hidden = false;
  byId("who-role").textContent = me.role;
  // The token carries the id and role; the email is the account's.
  tidings.get("/v1/me").then(
    (account) => { byId("who-email").textContent = /** @type {{ email: string }} */ (account).email; },
    () => {},
  );
  byId("staff").hidden = !staff;
  byId("customer").hidden = staff;
  running.forEach((stop) => stop());
  running = staff
    ? [startBoard(tidings), startStock(tidings), startBell(tidings), startPush(tidings)]
    : [startMyOrders(tidings), startBell(tidings), startPush(tidings)];
  running.push(tidings.onStatus(showStatus));
  showStatus(tidings.status);
  document.title = staff ? "Orders · Tidings" : "Your orders · Tidings";
  byId(staff ? "board-title" : "orders-title").focus();
}

/**
 * @param {string} [message] why the user is signed out, as an error
 * @param {string} [note] news for the user (a new password is set)
 */
function signedOut(message = "", note = "") {
  running.forEach((stop) => stop());
  running = [];
  byId("staff").hidden = true;
  byId("customer").hidden = true;
  byId("account").hidden = true;
  byId("reset").hidden = true;
  byId("verify").hidden = true;
  connection.hidden = true;
  byId("sign-in").hidden = false;
  byId("sign-in-error").textContent = message;
  byId("sign-in-note").textContent = note;
  document.title = "Sign in · Tidings";
  byId("email").focus();
}

byId("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.currentTarget);
  const email = /** @type {HTMLInputElement} */ (byId("email")).value.trim();
  const password = /** @type {HTMLInputElement} */ (byId("password"));
  const error = byId("sign-in-error");
  const submit = /** @type {HTMLButtonElement} */ (form.querySelector("button[type=submit]"));
  if (!email || !password.value) {
    error.textContent = "Enter your email and password.";
    return;
  }
  submit.disabled = true;
  error.textContent = "";
  byId("sign-in-note").textContent = "";
  try {
    await tidings.login(email, password.value);
    password.value = "";
    signedIn();
  } catch (e) {
    const status = /** @type {{ status?: number }} */ (e).status;
    error.textContent = status === 401 ? "That email and password do not match an account." : describe(e);
    password.select();
  } finally {
    submit.disabled = false;
  }
});

byId("sign-out").addEventListener("click", async () => {
  // The page's parts stop first, so that the end of the session is not taken for a
  // session that ended on its own.
  signedOut();
  await endPush(tidings).catch(() => {});
  await tidings.logout();
});

/**
 * The page an email's link leads to (README, "Email"), in place of the rest.
 * @param {import("./account.js").Route} route
 */
function emailPage(route) {
  running.forEach((stop) => stop());
  running = [];
  for (const id of ["staff", "customer", "account", "sign-in", "reset", "verify"]) {
    byId(id).hidden = id !== route.name;
  }
  connection.hidden = true;
  if (route.name === "reset") showReset(tidings, route.token, (note) => signedOut("", note));
  else void showVerify(tidings, route.token);
}

startForgot(tidings);

// The stored pair, if any, is taken once the store has been read.
await tidings.ready;
const route = emailRoute();
if (route) emailPage(route);
else if (tidings.me) signedIn();
else signedOut();
// A link from an email opened while the page is open.
window.addEventListener("hashchange", () => {
  const next = emailRoute();
  if (next) emailPage(next);
});
