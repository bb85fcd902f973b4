export class Tidings {
    /** @param {Options} [options] */
    constructor(options?: Options);
    /** Where the API is; "" for the page's own origin. */
    baseUrl: string;
    /** Cursors and the token pair (see store.js). */
    store: import("./store.js").Store;
    /** @type {typeof fetch} */
    fetch: typeof fetch;
    onTokens: ((pair: import("./events.js").TokenPair | null) => void) | undefined;
    /** @type {TokenPair | null} */
    tokens: TokenPair | null;
    /** @internal @type {Promise<void> | null} */
    refreshing: Promise<void> | null;
    /** @internal @type {ReturnType<typeof setTimeout> | undefined} */
    timer: ReturnType<typeof setTimeout> | undefined;
    /** @internal */
    lockName: string;
    ready: Promise<void>;
    live: {
        /**
         * A collection loaded over REST and kept current by live events.
         * @template {keyof import("./list.js").Kinds} K
         * @param {K} kind
         * @param {Record<string, string | number | boolean | undefined>} [query] the REST list's query;
         *   `limit` is the page size (every page is loaded)
         * @returns {LiveList<import("./list.js").Kinds[K]>}
         */
        list: <K extends keyof import("./list.js").Kinds>(kind: K, query?: Record<string, string | number | boolean | undefined>) => LiveList<import("./list.js").Kinds[K]>;
    };
    /** @internal */
    hub: Live;
    /** The decoded claims of the access token (`sub`, `role`, `exp`), or null. @returns {Claims | null} */
    get me(): Claims | null;
    /** What the live connection is doing. @returns {Status} */
    get status(): Status;
    /** Calls `listener` on every change of `status`; returns a function that stops it. @param {(status: Status) => void} listener */
    onStatus(listener: (status: Status) => void): () => undefined;
    /** @param {string} email @param {string} password */
    login(email: string, password: string): Promise<import("./events.js").Claims | null>;
    /** Ends this session on the server (best effort) and forgets the tokens. */
    logout(): Promise<void>;
    /** Takes a pair (from login elsewhere, say), or null to sign out locally. @param {TokenPair | null} pair */
    setTokens(pair: TokenPair | null): Promise<void>;
    /** Takes a pair as the current one without announcing it. @internal @param {TokenPair | null} pair */
    use(pair: TokenPair | null): void;
    /**
     * Trades the refresh token for a new pair. One at a time per client and, through a lock,
     * per store: a client that finds the stored pair already rotated by another one (another
     * tab) takes that pair instead of spending a token that is already spent.
     * @returns {Promise<void>}
     */
    refresh(): Promise<void>;
    /** @internal */
    rotate(): Promise<void>;
    /** A current access token (refreshed first when it is about to expire), or null. */
    access(): Promise<string | null>;
    /**
     * A REST call with the access token (refreshed before expiry, and once on a 401).
     * @param {string} method @param {string} path @param {unknown} [body]
     * @param {{ headers?: Record<string, string>, signal?: AbortSignal }} [options]
     * @returns {Promise<Response>}
     */
    request(method: string, path: string, body?: unknown, options?: {
        headers?: Record<string, string>;
        signal?: AbortSignal;
    }): Promise<Response>;
    /** @param {string} path */
    get(path: string): Promise<any>;
    /** @param {string} path @param {unknown} [body] */
    post(path: string, body?: unknown): Promise<any>;
    /** @param {string} path @param {unknown} body @param {{ ifMatch?: string | number }} [options] */
    patch(path: string, body: unknown, options?: {
        ifMatch?: string | number;
    }): Promise<any>;
    /** @param {string} path */
    delete(path: string): Promise<any>;
    /**
     * One HTTP exchange; a status other than 2xx or 304 is thrown as a TidingsError.
     * @internal
     * @param {string} method @param {string} path @param {unknown} body @param {string | null} token
     * @param {{ headers?: Record<string, string>, signal?: AbortSignal }} [options]
     * @returns {Promise<Response>}
     */
    send(method: string, path: string, body: unknown, token: string | null, options?: {
        headers?: Record<string, string>;
        signal?: AbortSignal;
    }): Promise<Response>;
    /**
     * Calls `handler` with every event of `topics`, in order, from where this store's cursor
     * left off (or `since`), across reconnects, restarts and token refreshes.
     * @param {string | string[]} topics @param {(event: TidingsEvent) => unknown} handler
     * @param {SubscribeOptions} [options]
     * @returns {Subscription}
     */
    subscribe(topics: string | string[], handler: (event: TidingsEvent) => unknown, options?: SubscribeOptions): Subscription;
    /** Closes the live connection and every subscription; saves the cursors. */
    close(): Promise<void>;
}
export type TokenPair = import("./events.js").TokenPair;
export type Claims = import("./events.js").Claims;
export type Options = import("./events.js").Options;
export type Response = import("./events.js").Response;
export type Status = import("./events.js").Status;
export type TidingsEvent = import("./events.js").TidingsEvent;
export type SubscribeOptions = import("./events.js").SubscribeOptions;
export type Subscription = import("./live.js").Subscription;
import { LiveList } from "./list.js";
import { Live } from "./live.js";
