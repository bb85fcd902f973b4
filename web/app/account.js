// The pages the account emails link to, and "Forgot password?" on the sign-in form.
//
// The emails' links are `{TIDINGS_PUBLIC_URL}/app/#/reset?token=…` and
// `/app/#/verify?token=…` (README, "Email"): the token is in the fragment, which the browser
// sends to no server, and these pages post it to the API. A link opened while the page is
// already open arrives as a `hashchange`.

import { byId, describe } from "./ui.js";

/** @typedef {import("./sdk/index.js").Tidings} Tidings */
/** @typedef {{ name: "reset" | "verify", token: string }} Route */

const USED_LINK = "This link is used, expired or unknown: each link works once, for a limited time.";

/**
 * The email page the address asks for, if any.
 * @returns {Route | null}
 */
export function emailRoute() {
  const match = /^#\/(reset|verify)\?(.*)$/.exec(location.hash);
  const token = match ? new URLSearchParams(match[2]).get("token") : null;
  return match && token ? { name: /** @type {Route["name"]} */ (match[1]), token } : null;
}

/** Takes the link's token out of the address bar and the history, once it is read. */
function forgetLink() {
  history.replaceState(null, "", location.pathname + location.search);
}

/**
 * A message for a refusal of a reset or verification: the used link, the fields' own
 * messages, or the problem's detail.
 * @param {unknown} error
 */
function refusal(error) {
  const { status, problem } = /** @type {{ status?: number, problem?: { code?: string,
    errors?: { message: string }[] } | null }} */ (error);
  if (status === 400 && problem?.code === "invalid_token") return USED_LINK;
  if (status === 422 && problem?.errors?.length) return problem.errors.map((e) => e.message).join(" ");
  return describe(error);
}

/**
 * The reset page: the new password twice, then back to signing in with it.
 * @param {Tidings} tidings
 * @param {string} token
 * @param {(note: string) => void} done shows the sign-in form with a note
 */
export function showReset(tidings, token, done) {
  const form = /** @type {HTMLFormElement} */ (byId("reset-form"));
  const password = /** @type {HTMLInputElement} */ (byId("new-password"));
  const again = /** @type {HTMLInputElement} */ (byId("new-password-again"));
  const error = byId("reset-error");
  const submit = /** @type {HTMLButtonElement} */ (form.querySelector("button[type=submit]"));
  form.reset();
  error.textContent = "";
  forgetLink();
  form.onsubmit = async (event) => {
    event.preventDefault();
    if (!password.value || !again.value) {
      error.textContent = "Enter the new password in both fields.";
      return;
    }
    if (password.value !== again.value) {
      error.textContent = "The two passwords differ: enter the same one twice.";
      again.select();
      return;
    }
    submit.disabled = true;
    error.textContent = "";
    try {
      await tidings.post("/v1/auth/password-reset/confirm", { token, password: password.value });
      form.reset();
      // Every session of the account has ended, this browser's too.
      await tidings.setTokens(null);
      done("Your new password is set, and every session has been signed out. Sign in with the new password.");
    } catch (e) {
      error.textContent = refusal(e);
      password.select();
    } finally {
      submit.disabled = false;
    }
  };
  document.title = "New password · Tidings";
  byId("reset-title").focus();
}

/**
 * The verification page: the link's token is posted at once, and the outcome shown.
 * @param {Tidings} tidings
 * @param {string} token
 */
export async function showVerify(tidings, token) {
  const result = byId("verify-result");
  result.dataset.outcome = "pending";
  result.textContent = "Verifying your email address…";
  forgetLink();
  document.title = "Address verification · Tidings";
  byId("verify-title").focus();
  try {
    await tidings.post("/v1/auth/verify-email", { token });
    result.dataset.outcome = "verified";
    result.textContent = "Your email address is verified. Thank you!";
  } catch (e) {
    result.dataset.outcome = "refused";
    result.textContent = `Your email address could not be verified. ${refusal(e)}`;
  }
}

/**
 * "Forgot password?": a reset link for the address in the sign-in form. The answer is the
 * same whether or not an account has the address, as the server's is.
 * @param {Tidings} tidings
 */
export function startForgot(tidings) {
  const button = /** @type {HTMLButtonElement} */ (byId("forgot"));
  button.addEventListener("click", async () => {
    const email = /** @type {HTMLInputElement} */ (byId("email"));
    const error = byId("sign-in-error");
    const note = byId("sign-in-note");
    error.textContent = "";
    note.textContent = "";
    if (!email.value.trim()) {
      error.textContent = "Enter your email address, then choose “Forgot password?” to get a link.";
      email.focus();
      return;
    }
    button.disabled = true;
    try {
      await tidings.post("/v1/auth/password-reset", { email: email.value.trim() });
      note.textContent = "If the address has an account, a link is on its way: open it to choose a new password.";
    } catch (e) {
      error.textContent = refusal(e);
    } finally {
      button.disabled = false;
    }
  });
}
