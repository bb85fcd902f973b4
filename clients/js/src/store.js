/**
 * Where a client keeps what outlives a connection: the last seq per topic
 * (`cursor:<topic>`) and the token pair (`tokens`). A store is any object with `get` and
 * `set`, synchronous or returning promises; `set(key, null)` forgets a key.
 * @typedef {{ get(key: string): unknown, set(key: string, value: unknown): unknown }} Store
 */

/** Keeps everything in memory, for one process or page. */
export class MemoryStore {
  constructor() {
    /** @type {Map<string, unknown>} */
    this.map = new Map();
  }
  /** @param {string} key */
  get(key) {
    return this.map.get(key) ?? null;
  }
  /** @param {string} key @param {unknown} value */
  set(key, value) {
    if (value == null) this.map.delete(key);
    else this.map.set(key, value);
  }
}

/**
 * Keeps everything in `localStorage` as JSON under a prefix, so a page reload resumes
 * and the tabs of one origin share one session (see README, "Clients").
 */
export class LocalStorageStore {
  /** @param {string} [prefix] @param {Storage} [storage] */
  constructor(prefix = "tidings:", storage = globalThis.localStorage) {
    this.prefix = prefix;
    this.storage = storage;
  }
  /** @param {string} key */
  get(key) {
    const text = this.storage.getItem(this.prefix + key);
    return text == null ? null : JSON.parse(text);
  }
  /** @param {string} key @param {unknown} value */
  set(key, value) {
    if (value == null) this.storage.removeItem(this.prefix + key);
    else this.storage.setItem(this.prefix + key, JSON.stringify(value));
  }
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
  constructor(name = "tidings") {
    this.prefix = `idb:${name}`;
    /** @type {Promise<IDBDatabase>} */
    this.db = done(
      Object.assign(indexedDB.open(name, 1), {
        /** @this {IDBOpenDBRequest} */
        onupgradeneeded() {
          this.result.createObjectStore("kv");
        },
      }),
    );
  }
  /** @param {string} key */
  async get(key) {
    const db = await this.db;
    return (await done(db.transaction("kv").objectStore("kv").get(key))) ?? null;
  }
  /** @param {string} key @param {unknown} value */
  async set(key, value) {
    const tx = (await this.db).transaction("kv", "readwrite");
    const kv = tx.objectStore("kv");
    if (value == null) kv.delete(key);
    else kv.put(value, key);
    // Committed, not just queued: another tab's next read sees it.
    await new Promise((ok, fail) => {
      tx.oncomplete = ok;
      tx.onerror = tx.onabort = () => fail(tx.error);
    });
  }
}

/** @template T @param {IDBRequest<T>} request @returns {Promise<T>} */
function done(request) {
  return new Promise((ok, fail) => {
    request.onsuccess = () => ok(request.result);
    request.onerror = () => fail(request.error);
  });
}
