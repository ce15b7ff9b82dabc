// The WebSocket connection (protocol unhidra.v1, docs/protocol.md): connects with the
// access token as a subprotocol, reconnects by itself with capped exponential backoff and
// full jitter, resubscribes every channel with `since` = the last seq processed, re-sends
// publishes that were not acknowledged (the server stores a client_msg_id once), and drops
// a connection that went silent.

const PROTOCOL = "unhidra.v1";
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const PING_EVERY_MS = 20_000;
const SILENT_LIMIT_MS = 45_000;

export class ChatSocket {
  #ws = null;
  #channels = new Set();
  #unacked = new Map(); // client_msg_id → publish frame
  #attempt = 0;
  #failuresSinceWelcome = 0;
  #retryTimer = null;
  #pingTimer = null;
  #lastFrameAt = 0;
  #running = false;
  #presence = "online"; // what this tab reports: "online" or "away"

  /**
   * @param {object} hooks
   * @param {(fresh: boolean) => Promise<string>} hooks.token  an access token (`fresh`: refreshed first)
   * @param {(channel: string) => number|undefined} hooks.since  the last seq processed in a channel
   * @param {(frame: object) => void} hooks.onFrame  every server frame
   * @param {(state: string) => void} hooks.onState  "connecting" | "online" | "offline"
   */
  constructor(hooks) {
    this.hooks = hooks;
  }

  start() {
    if (this.#running) return;
    this.#running = true;
    this.#connect(false);
  }

  stop() {
    this.#running = false;
    this.#presence = "online";
    clearTimeout(this.#retryTimer);
    this.#drop(1000);
    this.#channels.clear();
    this.#unacked.clear();
  }

  get open() {
    return this.#ws?.readyState === WebSocket.OPEN && this.#welcomed;
  }

  #welcomed = false;

  subscribe(channel) {
    if (this.#channels.has(channel)) return;
    this.#channels.add(channel);
    if (this.open) this.#sendSubscribe(channel);
  }

  /** Stops following a channel the user left (the server has already unsubscribed). */
  forgetChannel(channel) {
    this.#channels.delete(channel);
  }

  /**
   * Sends now, or at the next connection; safe to repeat with the same id. `threadRoot`
   * makes it a reply; `attachments` are ids of files the sender uploaded to the channel.
   */
  publish(channel, body, clientMsgId, { threadRoot, attachments } = {}) {
    const frame = { type: "publish", channel, body, client_msg_id: clientMsgId };
    if (threadRoot) frame.thread_root = threadRoot;
    if (attachments?.length) frame.attachments = attachments;
    this.#unacked.set(clientMsgId, frame);
    if (this.open) this.#send(frame);
  }

  /** Forgets a publish the server refused for good. */
  forget(clientMsgId) {
    this.#unacked.delete(clientMsgId);
  }

  /** "The user is typing here": passing, so it is dropped when offline. */
  typing(channel) {
    if (this.open && this.#channels.has(channel)) this.#send({ type: "typing", channel });
  }

  /** "online" or "away"; sent now and again after each reconnection. */
  setPresence(status) {
    if (status === this.#presence) return;
    this.#presence = status;
    if (this.open) this.#send({ type: "presence", status });
  }

  async #connect(freshToken) {
    if (!this.#running) return;
    this.hooks.onState("connecting");
    let token;
    try {
      token = await this.hooks.token(freshToken);
    } catch (err) {
      // 401: the session has ended (the token hook tells the app); anything else: retry.
      if (err?.status === 401) {
        this.hooks.onState("offline");
        return;
      }
      this.#scheduleRetry();
      return;
    }
    if (!this.#running) return;
    const url = `${location.origin.replace(/^http/, "ws")}/ws`;
    const ws = new WebSocket(url, [PROTOCOL, `bearer.${token}`]);
    this.#ws = ws;
    this.#welcomed = false;
    ws.onmessage = (event) => {
      if (this.#ws !== ws) return;
      this.#lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.#onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#welcomed = false;
      clearInterval(this.#pingTimer);
      if (!this.#running) return;
      this.hooks.onState("offline");
      // 1008: credentials revoked (or abuse): reconnect only with a freshly refreshed token,
      // which fails with 401 when the session is over. A handshake refused with 401 shows
      // up here as 1006, so repeated failures refresh too.
      this.#scheduleRetry(event.code === 1008 || this.#failuresSinceWelcome >= 2);
    };
  }

  #onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        this.#welcomed = true;
        this.#attempt = 0;
        this.#failuresSinceWelcome = 0;
        this.hooks.onState("online");
        // A new connection counts as online: say so if this tab is idle.
        if (this.#presence !== "online") this.#send({ type: "presence", status: this.#presence });
        for (const channel of this.#channels) this.#sendSubscribe(channel);
        for (const publish of this.#unacked.values()) this.#send(publish);
        clearInterval(this.#pingTimer);
        this.#pingTimer = setInterval(() => this.#checkAlive(), PING_EVERY_MS);
        break;
      case "ack":
        this.#unacked.delete(frame.client_msg_id);
        break;
      case "unsubscribed":
        this.#channels.delete(frame.channel);
        break;
      case "error":
        if (frame.ref && this.#unacked.has(frame.ref) && frame.code === "rate_limited") {
          const publish = this.#unacked.get(frame.ref);
          setTimeout(() => this.open && this.#unacked.has(frame.ref) && this.#send(publish), 1_000);
        } else if (frame.ref) {
          this.#unacked.delete(frame.ref);
        }
        break;
      default:
        break;
    }
    this.hooks.onFrame(frame);
  }

  #sendSubscribe(channel) {
    const since = this.hooks.since(channel);
    this.#send(since === undefined ? { type: "subscribe", channel } : { type: "subscribe", channel, since });
  }

  #send(frame) {
    this.#ws?.send(JSON.stringify(frame));
  }

  #checkAlive() {
    if (Date.now() - this.#lastFrameAt > SILENT_LIMIT_MS) {
      // Silent through two pings: the network is gone even if the socket does not know.
      this.#drop(4000);
      this.hooks.onState("offline");
      this.#scheduleRetry();
      return;
    }
    this.#send({ type: "ping" });
  }

  /** Detaches and closes the current socket without waiting for its close handshake. */
  #drop(code) {
    const ws = this.#ws;
    this.#ws = null;
    this.#welcomed = false;
    clearInterval(this.#pingTimer);
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(code);
  }

  #scheduleRetry(freshToken = false) {
    clearTimeout(this.#retryTimer);
    this.#failuresSinceWelcome += 1;
    // Full jitter: a random delay up to the capped exponential, so clients that lost the
    // server together do not come back together.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 16);
    const delay = Math.random() * ceiling;
    this.#retryTimer = setTimeout(() => this.#connect(freshToken), delay);
  }
}
