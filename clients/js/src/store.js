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
