/** @typedef {import("./client.js").Tidings} Tidings */
/** @typedef {import("./events.js").TidingsEvent} TidingsEvent */
/** @typedef {import("./events.js").Status} Status */
/** @typedef {import("./events.js").Options} Options */
/** @typedef {import("./events.js").SubscribeOptions} SubscribeOptions */
/** @typedef {{ code: number, reason?: string, live?: boolean, opened?: boolean, token?: string | null }} End */
/** @typedef {{ kind: string, topics?: string[], since?: number, subs?: Subscription[], first?: boolean }} Request */
export const TOPICS: string[];
/** One `subscribe` call: its topics, its handler, and the last seq it saw of each topic. */
export class Subscription {
    /**
     * @param {Live} live @param {string[]} topics @param {(event: TidingsEvent) => unknown} handler
     * @param {SubscribeOptions} options
     */
    constructor(live: Live, topics: string[], handler: (event: TidingsEvent) => unknown, options: SubscribeOptions);
    live: Live;
    topics: Set<string>;
    handler: (event: TidingsEvent) => unknown;
    onReset: ((topics: string[]) => void) | undefined;
    /** The last seq seen per topic; a topic absent here takes only what comes once subscribed. @type {Map<string, number>} */
    seen: Map<string, number>;
    /**
     * Per topic, how many replays asked for this subscription have not begun (see
     * WsSession.join); while any has not, it takes no event of the topic.
     * @type {Map<string, number>}
     */
    parked: Map<string, number>;
    closed: boolean;
    /** Settles once the subscription is part of the connection's. @type {Promise<void>} */
    ready: Promise<void>;
    /** Starts again after `since` (the position of a fresh REST load, say). @param {number} since */
    resume(since: number): void;
    /** Stops the handler; the connection closes with its last subscription. */
    close(): void;
}
export class Live {
    /** @param {Tidings} client @param {Options} options */
    constructor(client: Tidings, options: Options);
    client: import("./client.js").Tidings;
    transport: "websocket" | "sse" | "auto";
    backoff: {
        initialMs: number;
        maxMs: number;
    };
    acks: boolean | "auto";
    WebSocket: any;
    /** @type {Set<Subscription>} */
    subs: Set<Subscription>;
    /** The furthest seq handled per topic; saved to the store as `cursor:<topic>`. @type {Map<string, number>} */
    cursors: Map<string, number>;
    /** @type {Set<string>} */
    dirty: Set<string>;
    /** @type {Status} */
    status: Status;
    /** @type {Set<(status: Status) => void>} */
    listeners: Set<(status: Status) => void>;
    /** @type {WsSession | SseSession | null} */
    session: WsSession | SseSession | null;
    running: boolean;
    stopped: boolean;
    /** Messages waiting for an app's handler (one that returned a promise) to finish. @type {Array<[Session, any]> | null} */
    backlog: Array<[Session, any]> | null;
    /** @type {(() => void) | null} */
    wake: (() => void) | null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    flushTimer: ReturnType<typeof setTimeout> | undefined;
    /** @param {Partial<Status>} change */
    setStatus(change: Partial<Status>): void;
    /**
     * @param {string[]} topics @param {(event: TidingsEvent) => unknown} handler
     * @param {SubscribeOptions} options
     */
    subscribe(topics: string[], handler: (event: TidingsEvent) => unknown, options: SubscribeOptions): Subscription;
    /** @param {Subscription} sub */
    remove(sub: Subscription): void;
    /** The union of the subscriptions' topics. */
    topics(): string[];
    /**
     * Where a connection for `topics` resumes: the earliest seq any subscription saw.
     * @param {string[]} topics @param {Iterable<Subscription>} [subs]
     */
    since(topics: string[], subs?: Iterable<Subscription>): number | undefined;
    /** The token pair changed: the open WebSocket takes it in band; a stopped client starts again. */
    authenticated(): void;
    signedOut(): void;
    /** @param {string} error */
    stop(error: string): void;
    start(): void;
    /** Connects, and again after each end, while there is anything to connect for. */
    run(): Promise<void>;
    /** Full jitter: anything from 0 to the capped exponential. @param {number} attempt */
    delay(attempt: number): number;
    /** Waits `ms`, or while the browser is offline; ended early by `wake`. @param {number} ms */
    pause(ms: number): Promise<any> | undefined;
    /** @returns {Promise<End>} */
    ws(): Promise<End>;
    /** @returns {Promise<End>} */
    sse(): Promise<End>;
    /** A message from the server, in order behind any handler still running. @param {Session} session @param {any} msg */
    receive(session: Session, msg: any): void;
    /** @param {Session} session @param {TidingsEvent} event */
    event(session: Session, event: TidingsEvent): void;
    /** @param {Session} session @param {TidingsEvent} event */
    handled(session: Session, { topic, seq }: TidingsEvent): void;
    /** @param {string} topic @param {number} seq */
    advance(topic: string, seq: number): void;
    /** Writes the cursors that moved. */
    flush(): Promise<void>;
    /** The server could not resume `topics` (retention): those subscriptions reload. @param {string[]} topics @param {Iterable<Subscription>} subs */
    reset(topics: string[], subs: Iterable<Subscription>): void;
    close(): Promise<void>;
}
export type Tidings = import("./client.js").Tidings;
export type TidingsEvent = import("./events.js").TidingsEvent;
export type Status = import("./events.js").Status;
export type Options = import("./events.js").Options;
export type SubscribeOptions = import("./events.js").SubscribeOptions;
export type End = {
    code: number;
    reason?: string;
    live?: boolean;
    opened?: boolean;
    token?: string | null;
};
export type Request = {
    kind: string;
    topics?: string[];
    since?: number;
    subs?: Subscription[];
    first?: boolean;
};
export type Session = WsSession | SseSession;
/** @typedef {WsSession | SseSession} Session */
/** One WebSocket: its requests awaiting their answers (answered in order), and per topic how far it got. */
declare class WsSession {
    /**
     * @param {Live} live @param {WebSocket} ws @param {string | undefined} token the access token its ticket was made with
     * @param {(end: End) => void} done
     */
    constructor(live: Live, ws: WebSocket, token: string | undefined, done: (end: End) => void);
    live: Live;
    ws: WebSocket;
    opened: boolean;
    reached: boolean;
    caught: number;
    acks: boolean;
    heard: number;
    /** @type {Request[]} */
    pending: Request[];
    /** Per topic, the seq after which this connection still delivers (absent: not yet known). @type {Map<string, number>} */
    at: Map<string, number>;
    /** @type {Set<string>} */
    topics: Set<string>;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    ackTimer: ReturnType<typeof setTimeout> | undefined;
    acked: number;
    /** Ends the session once: at the socket's close, or at once when the client lets it go. @param {End} end */
    end: (end: End) => void;
    ended: boolean;
    /** @param {object} message @param {Request} [request] */
    send(message: object, request?: Request): void;
    /** @param {string[]} topics @param {number | undefined} since @param {Subscription[]} subs */
    request(topics: string[], since: number | undefined, subs: Subscription[], first?: boolean): void;
    /** @param {string} topic */
    waiting(topic: string): Request | undefined;
    /** Takes in a subscription made while connected. @param {Subscription} sub */
    join(sub: Subscription): void;
    /** @param {string[]} topics */
    leave(topics: string[]): void;
    /** @param {string} topic @param {number} seq @param {boolean} fresh whether a subscription had not seen it */
    passed(topic: string, seq: number, fresh: boolean): void;
    /** @param {any} msg */
    control(msg: any): void;
    authenticate(): void;
    /** Acknowledges, at most every 50 ms, what the app's handlers finished. @param {number} seq */
    ack(seq: number): void;
    close(): void;
}
/** One event stream over fetch: its topics are fixed, so a change of them opens another. */
declare class SseSession {
    /** @param {Live} live @param {string[]} topics @param {number | undefined} since */
    constructor(live: Live, topics: string[], since: number | undefined);
    live: Live;
    topics: Set<string>;
    since: number | undefined;
    abort: AbortController;
    reached: boolean;
    caught: number;
    acks: boolean;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    ackTimer: ReturnType<typeof setTimeout> | undefined;
    acked: number;
    /** @type {Map<string, number>} */
    at: Map<string, number>;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    quiet: ReturnType<typeof setTimeout> | undefined;
    deadline: number;
    open(): void;
    /** SSE marks no end of the replay: it is taken to end when events pause for 100 ms (or after 1 s). */
    settle(): void;
    /** @param {ReadableStream<Uint8Array>} body @returns {Promise<number>} the close code it stands for */
    read(body: ReadableStream<Uint8Array>): Promise<number>;
    /** @param {string} topic @param {number} seq */
    resetTo(topic: string, seq: number): void;
    /** @param {string} topic @param {number} seq @param {boolean} fresh */
    passed(topic: string, seq: number, fresh: boolean): void;
    /** @param {Subscription} sub */
    join(sub: Subscription): void;
    leave(): void;
    /** @param {any} _msg */
    control(_msg: any): void;
    authenticate(): void;
    /**
     * Acknowledges over REST, at most every 250 ms, what the app's handlers finished (an
     * event stream cannot carry messages upstream). A failed ack is not retried: the next
     * one covers it, and a missed one costs at most a push the user did not need.
     * @param {number} seq
     */
    ack(seq: number): void;
    close(): void;
}
export {};
