// The client: tokens (login, rotation, refresh before expiry) and REST with them; live
// delivery is in live.js, live collections in list.js.

import { TidingsError } from "./errors.js";
import { MemoryStore } from "./store.js";
import { Live } from "./live.js";
import { LiveList } from "./list.js";

/** @typedef {import("./events.js").TokenPair} TokenPair */
/** @typedef {import("./events.js").Claims} Claims */
/** @typedef {import("./events.js").Options} Options */
/** @typedef {import("./events.js").Response} Response */
/** @typedef {import("./events.js").Status} Status */
/** @typedef {import("./events.js").TidingsEvent} TidingsEvent */
/** @typedef {import("./events.js").SubscribeOptions} SubscribeOptions */
/** @typedef {import("./live.js").Subscription} Subscription */

const TOKENS = "tokens";

/**
 * One refresh at a time per store: across the tabs of an origin with the Web Locks API,
 * else among the clients of this page or process that share the store object.
 * @type {WeakMap<object, Promise<unknown>>}
 */
const turns = new WeakMap();

/**
 * @template T
 * @param {string} name @param {object} store @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
function withLock(name, store, fn) {
  const locks = globalThis.navigator?.locks;
  if (locks) return /** @type {Promise<T>} */ (locks.request(name, fn));
  const run = (turns.get(store) ?? Promise.resolve()).then(fn);
  turns.set(store, run.catch(() => {}));
  return run;
}

/** @param {string} token @returns {Claims | null} */
function decode(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return null;
  }
}

/** How long before expiry a token is replaced: a quarter of its life, 0.5 to 60 s. @param {TokenPair} pair */
const leeway = (pair) => Math.min(60000, Math.max(500, (pair.lifetime ?? 900000) / 4));

/** @param {TokenPair} pair */
const expiring = (pair) => (pair.expires_at ?? 0) - Date.now() < leeway(pair);

export class Tidings {
  /** @param {Options} [options] */
  constructor(options = {}) {
    /** Where the API is; "" for the page's own origin. */
    this.baseUrl = (options.baseUrl ?? "").replace(/\/$/, "");
    /** Cursors and the token pair (see store.js). */
    this.store = options.store ?? new MemoryStore();
    /** @type {typeof fetch} */
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.onTokens = options.onTokens;
    /** @type {TokenPair | null} */
    this.tokens = null;
    /** @internal @type {Promise<void> | null} */
    this.refreshing = null;
    /** @internal @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @internal */
    this.lockName = `tidings-refresh ${this.baseUrl} ${/** @type {any} */ (this.store).prefix ?? ""}`;
    this.ready = Promise.resolve(options.tokens ?? this.store.get(TOKENS)).then((pair) =>
      options.tokens ? this.setTokens(options.tokens) : this.use(/** @type {TokenPair | null} */ (pair)),
    );
    this.live = {
      /**
       * A collection loaded over REST and kept current by live events.
       * @template {keyof import("./list.js").Kinds} K
       * @param {K} kind
       * @param {Record<string, string | number | boolean | undefined>} [query] the REST list's query;
       *   `limit` is the page size (every page is loaded)
       * @returns {LiveList<import("./list.js").Kinds[K]>}
       */
      list: (kind, query) => new LiveList(this, kind, query),
    };
    /** @internal */
    this.hub = new Live(this, options);
  }

  /** The decoded claims of the access token (`sub`, `role`, `exp`), or null. @returns {Claims | null} */
  get me() {
    return this.tokens ? decode(this.tokens.access_token) : null;
  }

  /** What the live connection is doing. @returns {Status} */
  get status() {
    return this.hub.status;
  }

  /** Calls `listener` on every change of `status`; returns a function that stops it. @param {(status: Status) => void} listener */
  onStatus(listener) {
    this.hub.listeners.add(listener);
    return () => void this.hub.listeners.delete(listener);
  }

  /** @param {string} email @param {string} password */
  async login(email, password) {
    await this.ready;
    const res = await this.send("POST", "/v1/auth/login", { email, password }, null);
    await this.setTokens(res.body);
    return this.me;
  }

  /** Ends this session on the server (best effort) and forgets the tokens. */
  async logout() {
    await this.ready;
    const refresh = this.tokens?.refresh_token;
    await this.setTokens(null);
    if (refresh) await this.send("POST", "/v1/auth/logout", { refresh_token: refresh }, null).catch(() => {});
  }

  /** Takes a pair (from login elsewhere, say), or null to sign out locally. @param {TokenPair | null} pair */
  async setTokens(pair) {
    if (pair) {
      const claims = decode(pair.access_token);
      const lifetime = pair.lifetime ?? (claims ? (claims.exp - claims.iat) * 1000 : undefined);
      // `expires_in` counts from now; `exp` is whole seconds, so up to a second less is left.
      const expires_at =
        pair.expires_at ?? (pair.expires_in ? Date.now() + pair.expires_in * 1000 - 1000 : (claims?.exp ?? 0) * 1000);
      pair = { access_token: pair.access_token, refresh_token: pair.refresh_token, expires_at, lifetime };
    }
    await this.store.set(TOKENS, pair);
    this.use(pair);
    this.onTokens?.(pair);
    if (pair) this.hub.authenticated();
    else this.hub.signedOut();
  }

  /** Takes a pair as the current one without announcing it. @internal @param {TokenPair | null} pair */
  use(pair) {
    this.tokens = pair;
    clearTimeout(this.timer);
    if (!pair?.refresh_token) return;
    const wait = Math.max(0, (pair.expires_at ?? 0) - leeway(pair) - Date.now());
    this.timer = setTimeout(() => this.refresh().catch(() => {}), wait);
    // A Node process need not stay up for it.
    /** @type {any} */ (this.timer).unref?.();
  }

  /**
   * Trades the refresh token for a new pair. One at a time per client and, through a lock,
   * per store: a client that finds the stored pair already rotated by another one (another
   * tab) takes that pair instead of spending a token that is already spent.
   * @returns {Promise<void>}
   */
  refresh() {
    return (this.refreshing ??= this.rotate().finally(() => {
      this.refreshing = null;
    }));
  }

  /** @internal */
  async rotate() {
    await this.ready;
    const spent = this.tokens?.refresh_token;
    await withLock(this.lockName, this.store, async () => {
      const stored = /** @type {TokenPair | null} */ (await this.store.get(TOKENS));
      if (stored && stored.refresh_token !== spent && !expiring(stored)) {
        this.use(stored);
        this.onTokens?.(stored);
        this.hub.authenticated();
        return;
      }
      const token = stored?.refresh_token ?? spent;
      if (!token) throw new TidingsError(401, null, "not signed in");
      try {
        const res = await this.send("POST", "/v1/auth/refresh", { refresh_token: token }, null);
        await this.setTokens(res.body);
      } catch (e) {
        // Refused (revoked, expired, reused): this session is over. Anything else may pass.
        if (e instanceof TidingsError && [400, 401, 403].includes(e.status)) await this.setTokens(null);
        throw e;
      }
    });
  }

  /** A current access token (refreshed first when it is about to expire), or null. */
  async access() {
    await this.ready;
    if (this.tokens && expiring(this.tokens)) await this.refresh();
    return this.tokens?.access_token ?? null;
  }

  /**
   * A REST call with the access token (refreshed before expiry, and once on a 401).
   * @param {string} method @param {string} path @param {unknown} [body]
   * @param {{ headers?: Record<string, string>, signal?: AbortSignal }} [options]
   * @returns {Promise<Response>}
   */
  async request(method, path, body, options = {}) {
    const token = await this.access();
    try {
      return await this.send(method, path, body, token, options);
    } catch (e) {
      if (!(token && e instanceof TidingsError && e.status === 401)) throw e;
      await this.refresh();
      return this.send(method, path, body, this.tokens?.access_token ?? null, options);
    }
  }

  /** @param {string} path */
  async get(path) {
    return (await this.request("GET", path)).body;
  }
  /** @param {string} path @param {unknown} [body] */
  async post(path, body) {
    return (await this.request("POST", path, body)).body;
  }
  /** @param {string} path @param {unknown} body @param {{ ifMatch?: string | number }} [options] */
  async patch(path, body, options = {}) {
    const headers = options.ifMatch == null ? undefined : { "if-match": String(options.ifMatch) };
    return (await this.request("PATCH", path, body, { headers })).body;
  }
  /** @param {string} path */
  async delete(path) {
    return (await this.request("DELETE", path)).body;
  }

  /**
   * One HTTP exchange; a status other than 2xx or 304 is thrown as a TidingsError.
   * @internal
   * @param {string} method @param {string} path @param {unknown} body @param {string | null} token
   * @param {{ headers?: Record<string, string>, signal?: AbortSignal }} [options]
   * @returns {Promise<Response>}
   */
  async send(method, path, body, token, options = {}) {
    /** @type {Record<string, string>} */
    const headers = { ...options.headers };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await this.fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: options.signal,
      });
    } catch (e) {
      throw new TidingsError(0, null, `${method} ${path}: ${/** @type {Error} */ (e).message}`);
    }
    const text = await res.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    if (!res.ok && res.status !== 304) throw new TidingsError(res.status, parsed && typeof parsed === "object" ? parsed : null);
    const position = res.headers.get("tidings-position");
    return { status: res.status, headers: res.headers, body: parsed, position: position == null ? null : Number(position) };
  }

  /**
   * Calls `handler` with every event of `topics`, in order, from where this store's cursor
   * left off (or `since`), across reconnects, restarts and token refreshes.
   * @param {string | string[]} topics @param {(event: TidingsEvent) => unknown} handler
   * @param {SubscribeOptions} [options]
   * @returns {Subscription}
   */
  subscribe(topics, handler, options = {}) {
    return this.hub.subscribe(typeof topics === "string" ? [topics] : topics, handler, options);
  }

  /** Closes the live connection and every subscription; saves the cursors. */
  async close() {
    clearTimeout(this.timer);
    await this.hub.close();
  }
}
