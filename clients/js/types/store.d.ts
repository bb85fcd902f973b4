/**
 * Where a client keeps what outlives a connection: the last seq per topic
 * (`cursor:<topic>`) and the token pair (`tokens`). A store is any object with `get` and
 * `set`, synchronous or returning promises; `set(key, null)` forgets a key.
 * @typedef {{ get(key: string): unknown, set(key: string, value: unknown): unknown }} Store
 */
/** Keeps everything in memory, for one process or page. */
export class MemoryStore {
    /** @type {Map<string, unknown>} */
    map: Map<string, unknown>;
    /** @param {string} key */
    get(key: string): {} | null;
    /** @param {string} key @param {unknown} value */
    set(key: string, value: unknown): void;
}
/**
 * Keeps everything in `localStorage` as JSON under a prefix, so a page reload resumes
 * and the tabs of one origin share one session (see README, "Clients").
 */
export class LocalStorageStore {
    /** @param {string} [prefix] @param {Storage} [storage] */
    constructor(prefix?: string, storage?: Storage);
    prefix: string;
    storage: Storage;
    /** @param {string} key */
    get(key: string): any;
    /** @param {string} key @param {unknown} value */
    set(key: string, value: unknown): void;
}
/**
 * Keeps everything in IndexedDB. Tabs that share one session should use this store: a
 * write committed in one tab is seen by a read in another that follows it, which the
 * refresh lock relies on. (`localStorage` reaches other tabs a moment later, so a tab can
 * still read a refresh token another has just spent; the server's
 * TIDINGS_REFRESH_REUSE_GRACE answers that second use, see README "Clients".)
 */
export class IndexedDbStore {
    /** @param {string} [name] the database's name */
    constructor(name?: string);
    prefix: string;
    /** @type {Promise<IDBDatabase>} */
    db: Promise<IDBDatabase>;
    /** @param {string} key */
    get(key: string): Promise<any>;
    /** @param {string} key @param {unknown} value */
    set(key: string, value: unknown): Promise<void>;
}
/**
 * Where a client keeps what outlives a connection: the last seq per topic
 * (`cursor:<topic>`) and the token pair (`tokens`). A store is any object with `get` and
 * `set`, synchronous or returning promises; `set(key, null)` forgets a key.
 */
export type Store = {
    get(key: string): unknown;
    set(key: string, value: unknown): unknown;
};
