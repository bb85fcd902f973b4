// Live delivery: one connection per client, WebSocket or SSE, carrying the union of its
// subscriptions' topics. It resumes from the last seq each subscription saw, reconnects
// with capped exponential backoff and full jitter, and acts on each close code.

/** @typedef {import("./client.js").Tidings} Tidings */
/** @typedef {import("./events.js").TidingsEvent} TidingsEvent */
/** @typedef {import("./events.js").Status} Status */
/** @typedef {import("./events.js").Options} Options */
/** @typedef {import("./events.js").SubscribeOptions} SubscribeOptions */
/** @typedef {{ code: number, reason?: string, live?: boolean, opened?: boolean, token?: string | null }} End */
/** @typedef {{ kind: string, topics?: string[], since?: number, subs?: Subscription[], first?: boolean }} Request */

export const TOPICS = ["orders", "inventory", "notifications"];

/** @param {unknown} error */
const report = (error) => (globalThis.reportError ?? console.error)(error);

/** @param {Map<string, number>} map @param {string} key @param {number} value */
const raise = (map, key, value) => map.set(key, Math.max(map.get(key) ?? -1, value));

/** One `subscribe` call: its topics, its handler, and the last seq it saw of each topic. */
export class Subscription {
  /**
   * @param {Live} live @param {string[]} topics @param {(event: TidingsEvent) => unknown} handler
   * @param {SubscribeOptions} options
   */
  constructor(live, topics, handler, options) {
    this.live = live;
    this.topics = new Set(topics);
    this.handler = handler;
    this.onReset = options.onReset;
    /** The last seq seen per topic; a topic absent here takes only what comes once subscribed. @type {Map<string, number>} */
    this.seen = new Map();
    /**
     * Per topic, how many replays asked for this subscription have not begun (see
     * WsSession.join); while any has not, it takes no event of the topic.
     * @type {Map<string, number>}
     */
    this.parked = new Map();
    this.closed = false;
    /** Settles once the subscription is part of the connection's. @type {Promise<void>} */
    this.ready = Promise.resolve();
  }

  /** Starts again after `since` (the position of a fresh REST load, say). @param {number} since */
  resume(since) {
    for (const topic of this.topics) this.seen.set(topic, since);
    this.live.session?.join(this);
  }

  /** Stops the handler; the connection closes with its last subscription. */
  close() {
    this.closed = true;
    this.live.remove(this);
  }
}

export class Live {
  /** @param {Tidings} client @param {Options} options */
  constructor(client, options) {
    this.client = client;
    this.transport = options.transport ?? "auto";
    this.backoff = { initialMs: 500, maxMs: 30000, ...options.backoff };
    this.acks = options.acks ?? "auto";
    this.WebSocket = options.WebSocket;
    /** @type {Set<Subscription>} */
    this.subs = new Set();
    /** The furthest seq handled per topic; saved to the store as `cursor:<topic>`. @type {Map<string, number>} */
    this.cursors = new Map();
    /** @type {Set<string>} */
    this.dirty = new Set();
    /** @type {Status} */
    this.status = { state: "offline", transport: null, caughtUp: 0, error: null };
    /** @type {Set<(status: Status) => void>} */
    this.listeners = new Set();
    /** @type {WsSession | SseSession | null} */
    this.session = null;
    this.running = false;
    this.stopped = false;
    /** Messages waiting for an app's handler (one that returned a promise) to finish. @type {Array<[Session, any]> | null} */
    this.backlog = null;
    /** @type {(() => void) | null} */
    this.wake = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.flushTimer = undefined;
    // A browser that says it is offline: the connection is let go (a WebSocket may
    // otherwise linger unnoticed) and taken up again, resuming, once it is back.
    globalThis.addEventListener?.("offline", () => this.session?.close());
    globalThis.addEventListener?.("online", () => this.wake?.());
  }

  /** @param {Partial<Status>} change */
  setStatus(change) {
    this.status = { ...this.status, ...change };
    for (const listener of this.listeners) listener(this.status);
  }

  /**
   * @param {string[]} topics @param {(event: TidingsEvent) => unknown} handler
   * @param {SubscribeOptions} options
   */
  subscribe(topics, handler, options) {
    for (const topic of topics) if (!TOPICS.includes(topic)) throw new TypeError(`unknown topic: ${topic}`);
    const sub = new Subscription(this, topics, handler, options);
    sub.ready = Promise.all(
      topics.map(async (topic) => {
        const stored = await this.client.store.get(`cursor:${topic}`);
        if (stored != null) raise(this.cursors, topic, Number(stored));
        const since = options.since === undefined ? stored : options.since;
        if (since != null) sub.seen.set(topic, Number(since));
      }),
    ).then(() => {
      if (sub.closed) return;
      this.subs.add(sub);
      this.session?.join(sub);
      this.start();
    });
    // A store that failed is reported; an app that awaits `ready` sees it too.
    sub.ready.catch(report);
    return sub;
  }

  /** @param {Subscription} sub */
  remove(sub) {
    if (!this.subs.delete(sub)) return;
    if (!this.subs.size) this.session?.close();
    else this.session?.leave([...sub.topics].filter((t) => ![...this.subs].some((s) => s.topics.has(t))));
  }

  /** The union of the subscriptions' topics. */
  topics() {
    const all = new Set();
    for (const sub of this.subs) for (const topic of sub.topics) all.add(topic);
    return TOPICS.filter((t) => all.has(t));
  }

  /**
   * Where a connection for `topics` resumes: the earliest seq any subscription saw.
   * @param {string[]} topics @param {Iterable<Subscription>} [subs]
   */
  since(topics, subs = this.subs) {
    let since;
    for (const sub of subs)
      for (const topic of topics) {
        const seen = sub.seen.get(topic);
        // -1: everything the stream sends, from a server that gave no position (see `sse`).
        if (seen !== undefined && seen >= 0 && (since === undefined || seen < since)) since = seen;
      }
    return since;
  }

  /** The token pair changed: the open WebSocket takes it in band; a stopped client starts again. */
  authenticated() {
    this.session?.authenticate();
    if (this.stopped && this.status.error === "signed out") {
      this.stopped = false;
      this.start();
    }
  }

  signedOut() {
    if (this.subs.size || this.session) this.stop("signed out");
  }

  /** @param {string} error */
  stop(error) {
    this.stopped = true;
    this.session?.close();
    this.wake?.();
    this.setStatus({ state: "stopped", error });
  }

  start() {
    if (this.running || this.stopped || !this.subs.size) return;
    this.running = true;
    this.run();
  }

  /** Connects, and again after each end, while there is anything to connect for. */
  async run() {
    let attempt = 0;
    let sse = this.transport === "sse";
    let refused = 0;
    let everLive = false;
    for (;;) {
      // Decided in the same turn as `running` is cleared: a subscription made at any
      // moment either finds this loop going on or starts another.
      if (!this.subs.size || this.stopped) {
        this.running = false;
        if (!this.stopped) this.setStatus({ state: "offline", transport: null });
        return;
      }
      this.setStatus({ state: everLive ? "reconnecting" : "connecting", transport: sse ? "sse" : "websocket" });
      /** @type {End} */
      const end = await (sse ? this.sse() : this.ws()).catch((e) => ({
        code: e.status === 401 ? (this.client.tokens ? 4001 : 1008) : e.status === 429 ? 4029 : 1006,
        reason: this.client.tokens ? e.message : "signed out",
      }));
      this.session = null;
      // The next connection's first request covers what a parked subscription waited for.
      for (const sub of this.subs) sub.parked.clear();
      if (end.live) {
        everLive = true;
        attempt = 0;
      }
      if (this.stopped || !this.subs.size) continue;
      const code = end.code;
      if (code !== 1000) this.setStatus({ error: `${code}${end.reason ? `: ${end.reason}` : ""}` });
      let wait = 0;
      if (code === 1008) {
        this.stop(end.reason || "refused by the server (1008)");
        continue;
      } else if (code === 4001) {
        // Expired or revoked: a fresh token (unless the client already has a newer one),
        // then at once; refused again before going live, back off.
        if (end.live) refused = 0;
        if (refused++ > 0) wait = this.delay(attempt++);
        else if (end.token === this.client.tokens?.access_token) {
          try {
            await this.client.refresh();
          } catch {
            if (!this.client.tokens) {
              this.stop("signed out");
              continue;
            }
            wait = this.delay(attempt++);
          }
        }
      } else if (code === 4029) {
        wait = this.delay((attempt += 2));
      } else if (code !== 1001 && code !== 4008 && code !== 1000) {
        // A WebSocket that would not open while HTTP works is blocked: SSE instead.
        if (end.opened === false && this.transport === "auto" && !sse) sse = true;
        else wait = this.delay(attempt++);
      }
      if (code !== 4001) refused = 0;
      await this.pause(wait);
    }
  }

  /** Full jitter: anything from 0 to the capped exponential. @param {number} attempt */
  delay(attempt) {
    return Math.random() * Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** attempt);
  }

  /** Waits `ms`, or while the browser is offline; ended early by `wake`. @param {number} ms */
  pause(ms) {
    const offline = globalThis.navigator?.onLine === false;
    if (!ms && !offline) return;
    if (offline) this.setStatus({ state: "offline" });
    return new Promise((resolve) => {
      const timer = offline ? undefined : setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve(undefined);
      };
    });
  }

  /** @returns {Promise<End>} */
  async ws() {
    const WS = this.WebSocket ?? globalThis.WebSocket ?? (await import("ws")).default;
    const { body } = await this.client.request("POST", "/v1/stream-tickets");
    const token = this.client.tokens?.access_token;
    const url = new URL(`${this.client.baseUrl}/v1/ws`, globalThis.location?.href);
    url.protocol = url.protocol.replace("http", "ws");
    url.searchParams.set("ticket", body.ticket);
    if (this.stopped || !this.subs.size) return { code: 1000 };
    return new Promise((done) => {
      this.session = new WsSession(this, new WS(url.href), token, (end) => done({ ...end, token }));
    });
  }

  /** @returns {Promise<End>} */
  async sse() {
    const topics = this.topics();
    // SSE says nothing like `subscribed`: a subscription that has no position yet takes the
    // stream's current one from a REST read, so that a reconnect resumes from there.
    const fresh = [...this.subs].filter((sub) => topics.some((t) => sub.topics.has(t) && !sub.seen.has(t)));
    if (fresh.length) {
      const { position } = await this.client.request("GET", "/v1/notifications?limit=1");
      if (position != null)
        for (const sub of fresh) for (const topic of sub.topics) if (!sub.seen.has(topic)) sub.seen.set(topic, position);
    }
    const token = await this.client.access();
    const since = this.since(topics);
    const session = new SseSession(this, topics, since);
    this.session = session;
    /** @type {Record<string, string>} */
    const headers = { accept: "text/event-stream" };
    if (token) headers.authorization = `Bearer ${token}`;
    if (since !== undefined) headers["last-event-id"] = String(since);
    let res;
    try {
      res = await this.client.fetch(`${this.client.baseUrl}/v1/events?topics=${topics.join(",")}`, {
        headers,
        signal: session.abort.signal,
      });
    } catch {
      return { code: session.abort.signal.aborted ? 1000 : 1006 };
    }
    if (!res.ok || !res.body) {
      const s = res.status;
      return { code: s === 401 ? 4001 : s === 429 ? 4029 : s >= 500 ? 1013 : 1008, reason: `HTTP ${s}`, token };
    }
    session.acks = res.headers.get("tidings-acks") === "true";
    session.open();
    const end = await session.read(res.body).catch(() => (session.abort.signal.aborted ? 1000 : 1006));
    session.close();
    return { code: end, live: session.reached, token };
  }

  /** A message from the server, in order behind any handler still running. @param {Session} session @param {any} msg */
  receive(session, msg) {
    if (this.backlog) this.backlog.push([session, msg]);
    else if (msg.topic !== undefined) this.event(session, msg);
    else session.control(msg);
  }

  /** @param {Session} session @param {TidingsEvent} event */
  event(session, event) {
    const { topic, seq } = event;
    /** @type {PromiseLike<unknown>[] | undefined} */
    let running;
    let fresh = false;
    for (const sub of this.subs) {
      const seen = sub.seen.get(topic);
      if (seen === undefined || seq <= seen || !sub.topics.has(topic) || sub.parked.get(topic)) continue;
      sub.seen.set(topic, seq);
      fresh = true;
      try {
        const result = /** @type {any} */ (sub.handler(event));
        if (typeof result?.then === "function") (running ??= []).push(result.then(undefined, report));
      } catch (e) {
        report(e);
      }
    }
    session.passed(topic, seq, fresh);
    if (!running) return this.handled(session, event);
    const backlog = (this.backlog = /** @type {Array<[Session, any]>} */ ([]));
    Promise.all(running).then(() => {
      this.handled(session, event);
      this.backlog = null;
      // What an ended connection had queued is dropped: the next one resumes before it.
      for (const [s, msg] of backlog) if (s === this.session) this.receive(s, msg);
    });
  }

  /** @param {Session} session @param {TidingsEvent} event */
  handled(session, { topic, seq }) {
    if (seq > (this.cursors.get(topic) ?? -1)) this.advance(topic, seq);
    if (this.acks === true || (this.acks === "auto" && session.acks)) session.ack(seq);
  }

  /** @param {string} topic @param {number} seq */
  advance(topic, seq) {
    raise(this.cursors, topic, seq);
    this.dirty.add(topic);
    if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => this.flush(), 200);
      /** @type {any} */ (this.flushTimer).unref?.();
    }
  }

  /** Writes the cursors that moved. */
  async flush() {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const topics = [...this.dirty];
    this.dirty.clear();
    await Promise.all(topics.map((t) => this.client.store.set(`cursor:${t}`, this.cursors.get(t))));
  }

  /** The server could not resume `topics` (retention): those subscriptions reload. @param {string[]} topics @param {Iterable<Subscription>} subs */
  reset(topics, subs) {
    for (const sub of subs) {
      const lost = topics.filter((t) => sub.topics.has(t) && sub.seen.has(t));
      if (lost.length && !sub.closed) sub.onReset?.(lost);
    }
  }

  async close() {
    this.subs.clear();
    this.session?.close();
    this.wake?.();
    await this.flush();
    if (!this.stopped) this.setStatus({ state: "offline", transport: null });
  }
}

/** @typedef {WsSession | SseSession} Session */

/** One WebSocket: its requests awaiting their answers (answered in order), and per topic how far it got. */
class WsSession {
  /**
   * @param {Live} live @param {WebSocket} ws @param {string | undefined} token the access token its ticket was made with
   * @param {(end: End) => void} done
   */
  constructor(live, ws, token, done) {
    this.live = live;
    this.ws = ws;
    this.opened = false;
    this.reached = false;
    this.caught = 0;
    this.acks = false;
    this.heard = Date.now();
    /** @type {Request[]} */
    this.pending = [];
    /** Per topic, the seq after which this connection still delivers (absent: not yet known). @type {Map<string, number>} */
    this.at = new Map();
    /** @type {Set<string>} */
    this.topics = new Set();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.ackTimer = undefined;
    this.acked = -1;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    let beat;
    ws.onopen = () => {
      this.opened = true;
      const topics = live.topics();
      this.request(topics, live.since(topics), [...live.subs], true);
      // Refreshed while it opened: the connection would otherwise end with the older token.
      if (live.client.tokens?.access_token !== token) this.authenticate();
      // A quiet connection is asked for a pong; one that answers nothing is given up.
      beat = setInterval(() => {
        const quiet = Date.now() - this.heard;
        if (quiet > 45000) {
          ws.close(4000, "no answer");
          this.end({ code: 1006, reason: "the server stopped answering" });
        }
        else if (quiet > 20000) this.send({ type: "ping" }, { kind: "ping" });
      }, 10000);
      /** @type {any} */ (beat).unref?.();
    };
    ws.onmessage = (m) => {
      this.heard = Date.now();
      live.receive(this, JSON.parse(String(m.data)));
    };
    /** Ends the session once: at the socket's close, or at once when the client lets it go. @param {End} end */
    this.end = (end) => {
      if (this.ended) return;
      this.ended = true;
      clearInterval(beat);
      clearTimeout(this.ackTimer);
      ws.onmessage = null;
      done({ ...end, live: this.reached, opened: this.opened });
    };
    this.ended = false;
    ws.onclose = (e) => this.end({ code: e.code, reason: e.reason });
    ws.onerror = () => {};
  }

  /** @param {object} message @param {Request} [request] */
  send(message, request) {
    if (this.ws.readyState !== 1) return;
    this.ws.send(JSON.stringify(message));
    if (request) this.pending.push(request);
  }

  /** @param {string[]} topics @param {number | undefined} since @param {Subscription[]} subs */
  request(topics, since, subs, first = false) {
    if (!topics.length) return;
    for (const topic of topics) {
      this.topics.add(topic);
      if (since === undefined) this.at.delete(topic);
      else this.at.set(topic, since);
    }
    this.send({ type: "subscribe", topics, since }, { kind: "subscribe", topics, since, subs, first });
  }

  /** @param {string} topic */
  waiting(topic) {
    return this.pending.findLast((r) => r.kind === "subscribe" && r.topics?.includes(topic));
  }

  /** Takes in a subscription made while connected. @param {Subscription} sub */
  join(sub) {
    if (!this.opened) return;
    /** @type {string[]} */
    const fresh = [];
    /** @type {string[]} */
    const again = [];
    for (const topic of sub.topics) {
      const seen = sub.seen.get(topic);
      const at = this.at.get(topic);
      const request = this.waiting(topic);
      if (!this.topics.has(topic)) fresh.push(topic);
      else if (seen === undefined ? request || at !== undefined : at !== undefined && seen >= at) {
        if (request) request.subs?.push(sub);
        else if (seen === undefined) sub.seen.set(topic, /** @type {number} */ (at));
      } else again.push(topic);
    }
    this.request(fresh, this.live.since(fresh, [sub]), [sub]);
    // Events it needs went by already: those topics are replayed (the others skip repeats).
    // Until the server confirms the unsubscribe, what still comes of them is the old
    // subscription's, later than what this one needs first: it takes none of it.
    if (again.length) {
      for (const topic of again) sub.parked.set(topic, (sub.parked.get(topic) ?? 0) + 1);
      this.send({ type: "unsubscribe", topics: again }, { kind: "unsubscribe", topics: again, subs: [sub] });
      const subs = [...this.live.subs].filter((s) => again.some((t) => s.topics.has(t)));
      this.request(again, this.live.since(again, subs), subs);
    }
  }

  /** @param {string[]} topics */
  leave(topics) {
    if (!topics.length) return;
    for (const topic of topics) this.topics.delete(topic), this.at.delete(topic);
    this.send({ type: "unsubscribe", topics }, { kind: "unsubscribe" });
  }

  /** @param {string} topic @param {number} seq @param {boolean} fresh whether a subscription had not seen it */
  passed(topic, seq, fresh) {
    if (this.at.has(topic)) raise(this.at, topic, seq);
    if (!this.reached && fresh) this.caught++;
  }

  /** @param {any} msg */
  control(msg) {
    const live = this.live;
    if (msg.type === "reset") return live.reset(msg.topics, this.pending[0]?.subs ?? []);
    const request = this.pending.shift();
    if (msg.type === "unsubscribed")
      for (const sub of request?.subs ?? []) for (const t of request?.topics ?? []) sub.parked.set(t, (sub.parked.get(t) ?? 1) - 1);
    if (msg.type === "subscribed" && request?.topics) {
      const seq = msg.seq;
      this.acks ||= msg.acks === true;
      for (const topic of request.topics) {
        if (this.topics.has(topic)) raise(this.at, topic, seq);
        for (const sub of request.subs ?? []) if (sub.topics.has(topic)) raise(sub.seen, topic, seq);
        if (seq > (live.cursors.get(topic) ?? -1)) live.advance(topic, seq);
      }
      if (request.first) {
        this.reached = true;
        live.setStatus({ state: "live", transport: "websocket", caughtUp: this.caught, error: null });
      }
    } else if (msg.type === "error" && request?.kind === "subscribe") {
      if (msg.code === "replay_failed") this.request(request.topics ?? [], request.since, request.subs ?? [], request.first);
      else live.setStatus({ error: `${msg.code}: ${msg.message}` });
    }
  }

  authenticate() {
    const token = this.live.client.tokens?.access_token;
    if (token && this.opened) this.send({ type: "auth", token }, { kind: "auth" });
  }

  /** Acknowledges, at most every 50 ms, what the app's handlers finished. @param {number} seq */
  ack(seq) {
    this.acked = Math.max(this.acked, seq);
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.send({ type: "ack", seq: this.acked });
    }, 50);
  }

  close() {
    this.ws.close(1000);
    this.end({ code: 1000 });
  }
}

/** One event stream over fetch: its topics are fixed, so a change of them opens another. */
class SseSession {
  /** @param {Live} live @param {string[]} topics @param {number | undefined} since */
  constructor(live, topics, since) {
    this.live = live;
    this.topics = new Set(topics);
    this.since = since;
    this.abort = new AbortController();
    this.reached = false;
    this.caught = 0;
    this.acks = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.ackTimer = undefined;
    this.acked = -1;
    /** @type {Map<string, number>} */
    this.at = new Map();
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.quiet = undefined;
    this.deadline = 0;
  }

  open() {
    for (const topic of this.topics) {
      this.at.set(topic, this.since ?? -1);
      for (const sub of this.live.subs) if (!sub.seen.has(topic) && sub.topics.has(topic)) sub.seen.set(topic, this.since ?? -1);
    }
    this.deadline = Date.now() + 1000;
    this.settle();
  }

  /** SSE marks no end of the replay: it is taken to end when events pause for 100 ms (or after 1 s). */
  settle() {
    clearTimeout(this.quiet);
    this.quiet = setTimeout(() => {
      this.reached = true;
      this.live.setStatus({ state: "live", transport: "sse", caughtUp: this.caught, error: null });
    }, Math.min(100, Math.max(0, this.deadline - Date.now())));
  }

  /** @param {ReadableStream<Uint8Array>} body @returns {Promise<number>} the close code it stands for */
  async read(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = "";
    let type = "";
    let id = "";
    let comment = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0 && !this.abort.signal.aborted) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data && type === "reset") {
            this.live.reset(JSON.parse(data).topics, this.live.subs);
            for (const topic of this.topics) this.resetTo(topic, Number(id));
          } else if (data) this.live.receive(this, JSON.parse(data));
          data = type = "";
        } else if (line[0] === ":") comment = line.slice(1).trim();
        else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data = data ? `${data}\n${value}` : value;
          else if (field === "event") type = value;
          else if (field === "id") id = value;
        }
      }
    }
    // The stream's last comment says why it ended.
    return /expired|revoked/.test(comment) ? 4001 : /slow/.test(comment) ? 4008 : /shutting/.test(comment) ? 1001 : 1006;
  }

  /** @param {string} topic @param {number} seq */
  resetTo(topic, seq) {
    for (const sub of this.live.subs) if (sub.topics.has(topic)) raise(sub.seen, topic, seq);
    this.live.advance(topic, seq);
  }

  /** @param {string} topic @param {number} seq @param {boolean} fresh */
  passed(topic, seq, fresh) {
    raise(this.at, topic, seq);
    if (!this.reached && fresh) {
      this.caught++;
      this.settle();
    }
  }

  /** @param {Subscription} sub */
  join(sub) {
    const fits = [...sub.topics].every((t) => {
      const seen = sub.seen.get(t);
      const at = this.at.get(t);
      return at !== undefined && (seen === undefined || seen >= at);
    });
    if (!fits) return this.close();
    for (const topic of sub.topics) if (!sub.seen.has(topic)) sub.seen.set(topic, /** @type {number} */ (this.at.get(topic)));
  }

  leave() {}

  /** @param {any} _msg */
  control(_msg) {}

  authenticate() {}

  /**
   * Acknowledges over REST, at most every 250 ms, what the app's handlers finished (an
   * event stream cannot carry messages upstream). A failed ack is not retried: the next
   * one covers it, and a missed one costs at most a push the user did not need.
   * @param {number} seq
   */
  ack(seq) {
    this.acked = Math.max(this.acked, seq);
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.live.client.request("POST", "/v1/events/ack", { seq: this.acked }).catch(() => {});
    }, 250);
  }

  close() {
    clearTimeout(this.ackTimer);
    clearTimeout(this.quiet);
    this.abort.abort();
  }
}
