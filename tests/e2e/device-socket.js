// A device's WebSocket for the tests: a small RFC 6455 client over node:http, so the tests
// need no dependency (Node 20's WebSocket is behind --experimental-websocket). Text frames
// only, as the protocol uses (docs/protocol.md); pings are answered, fragments joined.

import crypto from "node:crypto";
import http from "node:http";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export class DeviceSocket {
  #socket;
  #buffer = Buffer.alloc(0);
  #fragments = [];
  #queue = []; // frames not yet taken by next()
  #waiters = []; // {match, resolve, reject, timer}
  frames = []; // every frame received, for failure messages
  closed; // resolves to {code, reason} when the connection ends

  constructor(socket, head) {
    this.#socket = socket;
    let done;
    this.closed = new Promise((resolve) => { done = resolve; });
    this.closeInfo = null;
    const finish = (info) => {
      if (this.closeInfo) return;
      this.closeInfo = info;
      for (const w of this.#waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Error(`the socket closed (${info.code} ${info.reason}) while waiting; frames: ${JSON.stringify(this.frames)}`));
      }
      done(info);
    };
    this.#finish = finish;
    socket.on("data", (chunk) => this.#read(chunk));
    socket.on("close", () => finish({ code: 1006, reason: "connection lost" }));
    socket.on("error", () => {});
    if (head?.length) this.#read(head);
  }

  #finish;

  /** Opens `url` (`ws://…/ws`) offering `protocols`; rejects with the HTTP status if refused. */
  static connect(url, protocols, { timeout = 15_000 } = {}) {
    const target = new URL(url.replace(/^ws/, "http"));
    const key = crypto.randomBytes(16).toString("base64");
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        headers: {
          connection: "Upgrade",
          upgrade: "websocket",
          "sec-websocket-version": "13",
          "sec-websocket-key": key,
          "sec-websocket-protocol": protocols.join(", "),
        },
        timeout,
      });
      req.on("upgrade", (res, socket, head) => {
        const accept = crypto.createHash("sha1").update(key + GUID).digest("base64");
        if (res.headers["sec-websocket-accept"] !== accept) {
          socket.destroy();
          reject(new Error("bad Sec-WebSocket-Accept"));
          return;
        }
        const ws = new DeviceSocket(socket, head);
        ws.protocol = res.headers["sec-websocket-protocol"];
        resolve(ws);
      });
      req.on("response", (res) => {
        let body = "";
        res.on("data", (c) => { body += c; });
        res.on("end", () => {
          const err = new Error(`handshake refused: ${res.statusCode} ${body}`);
          err.status = res.statusCode;
          reject(err);
        });
      });
      req.on("timeout", () => req.destroy(new Error("handshake timed out")));
      req.on("error", reject);
      req.end();
    });
  }

  /** Sends a JSON frame. */
  send(frame) {
    this.#write(0x1, Buffer.from(JSON.stringify(frame)));
  }

  /**
   * The next frame (oldest first) of `type` (a string) or for which `type(frame)` is true;
   * the frames before it stay queued for other calls.
   */
  next(type, timeout = 15_000) {
    const match = typeof type === "function" ? type : (f) => type === undefined || f.type === type;
    const at = this.#queue.findIndex(match);
    if (at >= 0) return Promise.resolve(this.#queue.splice(at, 1)[0]);
    if (this.closeInfo) return Promise.reject(new Error(`closed (${this.closeInfo.code})`));
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve, reject };
      waiter.timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        reject(new Error(`no ${typeof type === "string" ? type : "matching"} frame within ${timeout} ms; frames: ${JSON.stringify(this.frames)}`));
      }, timeout);
      this.#waiters.push(waiter);
    });
  }

  /** Sends a ping and waits for its pong: every frame sent before has been handled. */
  async settle() {
    this.send({ type: "ping" });
    await this.next("pong");
  }

  /** A clean close (1000), waiting for the server's close frame or the end of the socket. */
  async close(code = 1000) {
    if (this.closeInfo) return this.closeInfo;
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code, 0);
    this.#write(0x8, payload);
    const timer = setTimeout(() => this.#socket.destroy(), 5_000);
    const info = await this.closed;
    clearTimeout(timer);
    this.#socket.destroy();
    return info;
  }

  #write(opcode, payload) {
    if (this.#socket.destroyed) return;
    const mask = crypto.randomBytes(4);
    let header;
    if (payload.length < 126) {
      header = Buffer.from([0x80 | opcode, 0x80 | payload.length]);
    } else if (payload.length < 65536) {
      header = Buffer.alloc(4);
      header[0] = 0x80 | opcode;
      header[1] = 0x80 | 126;
      header.writeUInt16BE(payload.length, 2);
    } else {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode;
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    const masked = Buffer.from(payload);
    for (let i = 0; i < masked.length; i += 1) masked[i] ^= mask[i % 4];
    this.#socket.write(Buffer.concat([header, mask, masked]));
  }

  #read(chunk) {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      const b = this.#buffer;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const opcode = b[0] & 0x0f;
      const masked = (b[1] & 0x80) !== 0;
      let length = b[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (b.length < 4) return;
        length = b.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (b.length < 10) return;
        length = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      const maskAt = offset;
      if (masked) offset += 4;
      if (b.length < offset + length) return;
      const payload = Buffer.from(b.subarray(offset, offset + length));
      if (masked) for (let i = 0; i < payload.length; i += 1) payload[i] ^= b[maskAt + (i % 4)];
      this.#buffer = b.subarray(offset + length);
      this.#frame(fin, opcode, payload);
    }
  }

  #frame(fin, opcode, payload) {
    if (opcode === 0x9) {
      this.#write(0xa, payload); // pong
      return;
    }
    if (opcode === 0xa) return;
    if (opcode === 0x8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      const reason = payload.subarray(2).toString("utf8");
      if (!this.closeInfo) {
        this.#write(0x8, payload.subarray(0, 2)); // echo, as RFC 6455 asks
        this.#finish({ code, reason });
      }
      this.#socket.end();
      return;
    }
    if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
      this.#fragments.push(payload);
      if (!fin) return;
      const text = Buffer.concat(this.#fragments).toString("utf8");
      this.#fragments = [];
      let frame;
      try {
        frame = JSON.parse(text);
      } catch {
        frame = { type: "unparsed", text };
      }
      this.frames.push(frame);
      const waiter = this.#waiters.find((w) => w.match(frame));
      if (waiter) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        clearTimeout(waiter.timer);
        waiter.resolve(frame);
      } else {
        this.#queue.push(frame);
      }
    }
  }
}
