// A Web Push service for the browser tests, standing in for the one a browser's vendor runs
// (Google's for Chromium), which is out of reach offline. It holds what a browser would:
// the subscription's P-256 key pair and auth secret, made here. The server sends to its
// endpoint as to any push service, and it checks each request as one would: the VAPID
// token (RFC 8292: ES256 over the audience and expiry, with the key in the header), then
// decrypts the payload (RFC 8291, aes128gcm) with the subscription's private key.

import assert from "node:assert/strict";
import { createDecipheriv, createECDH, createPublicKey, hkdfSync, randomBytes, verify } from "node:crypto";
import { createServer } from "node:http";

/** @typedef {{ headers: import("node:http").IncomingHttpHeaders, plaintext: string }} PushMessage */

/** @param {Buffer} bytes */
const b64url = (bytes) => bytes.toString("base64url");

export class PushService {
  /** @param {string} vapidKey the server's VAPID public key (base64url), as it serves it */
  constructor(vapidKey) {
    this.vapidKey = vapidKey;
    this.ecdh = createECDH("prime256v1");
    this.ecdh.generateKeys();
    this.auth = randomBytes(16);
    /** @type {(message: PushMessage) => void} */
    this.onMessage = () => {};
    /** Every request that failed a check, to fail the test with. @type {string[]} */
    this.errors = [];
    this.server = createServer((request, response) => {
      /** @type {Buffer[]} */
      const chunks = [];
      request.on("data", (chunk) => chunks.push(chunk));
      request.on("end", () => {
        try {
          const message = this.receive(request, Buffer.concat(chunks));
          response.writeHead(201, { location: `${this.origin}/messages/${randomBytes(8).toString("hex")}` }).end();
          this.onMessage(message);
        } catch (e) {
          this.errors.push(String(e));
          response.writeHead(400).end();
        }
      });
    });
  }

  /** Listens on 127.0.0.1 (the server must run with TIDINGS_PUSH_ALLOW_PRIVATE_ENDPOINTS). */
  async start() {
    await new Promise((done) => this.server.listen(0, "127.0.0.1", () => done(undefined)));
    const { port } = /** @type {import("node:net").AddressInfo} */ (this.server.address());
    this.origin = `http://127.0.0.1:${port}`;
    return this;
  }

  async stop() {
    await new Promise((done) => this.server.close(done));
  }

  /** The subscription as a browser's `PushSubscription.toJSON()` gives it. */
  subscription() {
    return {
      endpoint: `${this.origin}/push/${b64url(this.auth.subarray(0, 8))}`,
      expirationTime: null,
      keys: { p256dh: b64url(this.ecdh.getPublicKey()), auth: b64url(this.auth) },
    };
  }

  /**
   * Checks one push request and decrypts its payload.
   * @param {import("node:http").IncomingMessage} request
   * @param {Buffer} body
   * @returns {PushMessage}
   */
  receive(request, body) {
    assert.equal(request.method, "POST");
    assert.equal(request.url, new URL(this.subscription().endpoint).pathname, "the subscription's endpoint");
    assert.equal(request.headers["content-encoding"], "aes128gcm");
    assert.match(String(request.headers.ttl), /^\d+$/, "a TTL");
    this.checkVapid(String(request.headers.authorization));

    // The header of RFC 8188: salt (16), record size (4), key id length (1), key id (the
    // sender's ephemeral public key); then a single record.
    const salt = body.subarray(0, 16);
    const recordSize = body.readUInt32BE(16);
    const idLength = body[20];
    const senderKey = body.subarray(21, 21 + idLength);
    const record = body.subarray(21 + idLength);
    assert.ok(record.length <= recordSize, "one record");
    // RFC 8291, section 3.4: the input key from the shared secret and the auth secret.
    const shared = this.ecdh.computeSecret(senderKey);
    const info = Buffer.concat([Buffer.from("WebPush: info\0"), this.ecdh.getPublicKey(), senderKey]);
    const ikm = Buffer.from(hkdfSync("sha256", shared, this.auth, info, 32));
    const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
    const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
    const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
    decipher.setAuthTag(record.subarray(-16));
    const padded = Buffer.concat([decipher.update(record.subarray(0, -16)), decipher.final()]);
    // The last record's delimiter is 2, followed by any padding of zeros.
    let end = padded.length - 1;
    while (end > 0 && padded[end] === 0) end -= 1;
    assert.equal(padded[end], 2, "the last record's delimiter");
    return { headers: request.headers, plaintext: padded.subarray(0, end).toString("utf8") };
  }

  /**
   * `Authorization: vapid t=<JWT>, k=<key>`: the key is the server's, the token is signed
   * with it, names this service's origin and has not expired.
   * @param {string} header
   */
  checkVapid(header) {
    const fields = Object.fromEntries(header.replace(/^vapid /, "").split(",").map((part) => {
      const at = part.indexOf("=");
      return [part.slice(0, at).trim(), part.slice(at + 1).trim()];
    }));
    assert.equal(fields.k, this.vapidKey, "the VAPID key is the one the server serves");
    const [head, claims, signature] = String(fields.t).split(".");
    const point = Buffer.from(fields.k, "base64url");
    const key = createPublicKey({
      key: { kty: "EC", crv: "P-256", x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33, 65)) },
      format: "jwk",
    });
    const signed = verify("sha256", Buffer.from(`${head}.${claims}`),
      { key, dsaEncoding: "ieee-p1363" }, Buffer.from(signature, "base64url"));
    assert.ok(signed, "the VAPID token is signed with the key");
    const { aud, exp } = JSON.parse(Buffer.from(claims, "base64url").toString());
    assert.equal(aud, this.origin, "the token's audience is the push service");
    assert.ok(exp > Date.now() / 1000, "the token has not expired");
  }
}
