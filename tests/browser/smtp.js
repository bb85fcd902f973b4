// A mail server for the browser tests: a stand-in that speaks SMTP (RFC 5321) over plain
// TCP on 127.0.0.1: the 220 greeting, EHLO, MAIL FROM, RCPT TO, DATA (dot-stuffing undone),
// RSET, NOOP and QUIT. It keeps each message it accepts and reads its MIME parts (the text
// and HTML of multipart/alternative, in 7bit, quoted-printable or base64), for the test to
// follow the links in them.

import { createServer } from "node:net";

/** @typedef {{ to: string[], subject: string, text: string, html: string }} Mail */

export class SmtpServer {
  constructor() {
    /** @type {Mail[]} */
    this.mails = [];
    /** Tests waiting for a mail: each takes the mail (true) or leaves it. @type {((mail: Mail) => boolean)[]} */
    this.waiting = [];
    this.server = createServer((socket) => {
      socket.setEncoding("latin1");
      /** @type {string[]} */
      let to = [];
      /** The message's lines while DATA is read. @type {string[] | null} */
      let data = null;
      let buffer = "";
      const reply = (/** @type {string} */ line) => socket.write(`${line}\r\n`);
      reply("220 localhost ESMTP test stand-in");
      socket.on("data", (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf("\r\n")) >= 0) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (data !== null) {
            if (line === ".") {
              this.accept(to, data.join("\r\n"));
              data = null;
              to = [];
              reply("250 2.0.0 accepted");
            } else {
              data.push(line.startsWith(".") ? line.slice(1) : line);
            }
            continue;
          }
          const verb = line.slice(0, 4).toUpperCase();
          if (verb === "EHLO" || verb === "HELO") reply("250 localhost");
          else if (verb === "MAIL") reply("250 2.1.0 ok");
          else if (verb === "RCPT") {
            to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
            reply("250 2.1.5 ok");
          } else if (verb === "DATA") {
            data = [];
            reply("354 end with <CRLF>.<CRLF>");
          } else if (verb === "RSET") {
            to = [];
            reply("250 2.0.0 ok");
          } else if (verb === "NOOP") reply("250 2.0.0 ok");
          else if (verb === "QUIT") {
            reply("221 2.0.0 bye");
            socket.end();
          } else reply("502 5.5.2 not implemented");
        }
      });
      socket.on("error", () => {});
    });
  }

  async start() {
    await new Promise((done) => this.server.listen(0, "127.0.0.1", () => done(undefined)));
    const { port } = /** @type {import("node:net").AddressInfo} */ (this.server.address());
    /** For `TIDINGS_SMTP_URL`. */
    this.url = `smtp://127.0.0.1:${port}`;
    return this;
  }

  async stop() {
    await new Promise((done) => this.server.close(done));
  }

  /**
   * The next mail to `address` (one already received, or the next to come).
   * @param {string} address
   * @returns {Promise<Mail>}
   */
  next(address) {
    const index = this.mails.findIndex((mail) => mail.to.includes(address));
    if (index >= 0) return Promise.resolve(this.mails.splice(index, 1)[0]);
    return new Promise((done) => {
      this.waiting.push((mail) => {
        if (!mail.to.includes(address)) return false;
        done(mail);
        return true;
      });
    });
  }

  /**
   * @param {string[]} to
   * @param {string} message
   */
  accept(to, message) {
    const { headers, body } = split(message);
    /** @type {Mail} */
    const mail = { to, subject: headers.get("subject") ?? "", text: "", html: "" };
    for (const part of parts(headers, body)) {
      const type = part.headers.get("content-type") ?? "text/plain";
      if (type.startsWith("text/plain")) mail.text = part.text;
      if (type.startsWith("text/html")) mail.html = part.text;
    }
    const taker = this.waiting.findIndex((take) => take(mail));
    if (taker >= 0) this.waiting.splice(taker, 1);
    else this.mails.push(mail);
  }
}

/**
 * A message's (or part's) headers, unfolded and by lower-case name, and its body.
 * @param {string} message
 */
function split(message) {
  const at = message.indexOf("\r\n\r\n");
  const head = message.slice(0, at).replace(/\r\n[ \t]+/g, " ");
  const headers = new Map(head.split("\r\n").map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
  }));
  return { headers, body: message.slice(at + 4) };
}

/**
 * The leaf parts of a message, their bodies decoded to text.
 * @param {Map<string, string>} headers
 * @param {string} body
 * @returns {{ headers: Map<string, string>, text: string }[]}
 */
function parts(headers, body) {
  const type = headers.get("content-type") ?? "text/plain";
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (type.startsWith("multipart/") && boundary) {
    return body.split(`--${boundary}`).slice(1, -1)
      .flatMap((part) => {
        const inner = split(part.replace(/^\r\n/, ""));
        return parts(inner.headers, inner.body.replace(/\r\n$/, ""));
      });
  }
  const encoding = (headers.get("content-transfer-encoding") ?? "7bit").toLowerCase();
  let bytes;
  if (encoding === "base64") bytes = Buffer.from(body.replace(/\s+/g, ""), "base64");
  else if (encoding === "quoted-printable") {
    const unfolded = body.replace(/=\r\n/g, "");
    bytes = Buffer.from(unfolded.replace(/=([0-9A-F]{2})/gi, (_, hex) => String.fromCharCode(parseInt(hex, 16))), "latin1");
  } else bytes = Buffer.from(body, "latin1");
  return [{ headers, text: bytes.toString("utf8") }];
}
