// The REST API: one place for requests, errors and the session's tokens.
//
// Tokens live in this module's memory only (never localStorage or cookies): a reload
// means logging in again. The access token is refreshed before it expires, with the
// refresh token, which rotates: each one works once, so refreshes are single-flight.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the server could not be reached
    this.code = code; // the server's stable code, e.g. "weak_password"
    this.retryAfter = retryAfter; // seconds, for 429 and 503
  }
}

/** Refresh when this share of the access token's lifetime has passed. */
const REFRESH_AT = 0.8;

export class Api {
  #access = null;
  #refresh = null;
  #expiresAt = 0;
  #timer = null;
  #refreshing = null;

  /** `onSessionEnded` runs when the server no longer accepts the session. */
  constructor({ onSessionEnded = () => {} } = {}) {
    this.onSessionEnded = onSessionEnded;
  }

  get signedIn() {
    return this.#access !== null;
  }

  register(username, password) {
    return this.#call("POST", "/api/v1/auth/register", { username, password }, false);
  }

  async login(username, password) {
    this.#store(await this.#call("POST", "/api/v1/auth/login", { username, password }, false));
  }

  async logout() {
    const refreshToken = this.#refresh;
    this.#clear();
    if (refreshToken) {
      await this.#call("POST", "/api/v1/auth/logout", { refresh_token: refreshToken }, false).catch(() => {});
    }
  }

  /** A current access token, refreshed first when it is about to expire. */
  async accessToken() {
    if (!this.#access) throw new ApiError(401, "unauthorized", "not signed in");
    if (Date.now() > this.#expiresAt - 30_000) await this.refresh();
    return this.#access;
  }

  /** Rotates the token pair; concurrent callers share one request. */
  refresh() {
    this.#refreshing ??= this.#rotate().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #rotate() {
    const refreshToken = this.#refresh;
    if (!refreshToken) throw new ApiError(401, "unauthorized", "not signed in");
    try {
      this.#store(await this.#call("POST", "/api/v1/auth/refresh", { refresh_token: refreshToken }, false));
    } catch (err) {
      if (err.status === 401) {
        this.#clear();
        this.onSessionEnded();
      }
      throw err;
    }
  }

  #store(tokens) {
    this.#access = tokens.access_token;
    this.#refresh = tokens.refresh_token;
    const lifetime = tokens.expires_in * 1000;
    this.#expiresAt = Date.now() + lifetime;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.refresh().catch(() => {}), Math.max(5_000, lifetime * REFRESH_AT));
  }

  #clear() {
    clearTimeout(this.#timer);
    this.#access = this.#refresh = null;
    this.#expiresAt = 0;
  }

  /**
   * An authenticated request; a 401 gets one refresh and one retry. `body` is sent as JSON,
   * except a Blob (a file), which is sent as it is with its own type.
   */
  async request(method, path, body, { as = "json" } = {}) {
    try {
      return await this.#call(method, path, body, true, as);
    } catch (err) {
      if (err.status !== 401 || err.code !== "unauthorized" || !this.#refresh) throw err;
      await this.refresh();
      return this.#call(method, path, body, true, as);
    }
  }

  async #call(method, path, body, authenticated, as = "json") {
    const headers = { accept: as === "json" ? "application/json" : "*/*" };
    const raw = body instanceof Blob;
    if (raw) headers["content-type"] = body.type || "application/octet-stream";
    else if (body !== undefined) headers["content-type"] = "application/json";
    if (authenticated) headers.authorization = `Bearer ${await this.accessToken()}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined || raw ? body : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
    }
    if (response.ok && as === "blob") return response.blob();
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      // A body that is not JSON (a proxy's error page): described below by the status.
    }
    if (!response.ok) {
      const error = data?.error;
      throw new ApiError(
        response.status,
        error?.code ?? `http_${response.status}`,
        error?.message ?? `The server answered ${response.status} ${response.statusText}`,
        Number(response.headers.get("retry-after")) || null,
      );
    }
    return data;
  }

  me() {
    return this.request("GET", "/api/v1/me");
  }

  async channels() {
    return (await this.request("GET", "/api/v1/channels")).channels;
  }

  createChannel(name, isPrivate) {
    return this.request("POST", "/api/v1/channels", { name, private: isPrivate });
  }

  addMember(channelId, userId) {
    return this.request("POST", `${channelPath(channelId)}/members`, { user_id: userId });
  }

  async members(channelId) {
    return (await this.request("GET", `${channelPath(channelId)}/members`)).members;
  }

  /** The devices linked to a channel: `[{device_id, name, kind}]` (members may ask). */
  async channelDevices(channelId) {
    return (await this.request("GET", `${channelPath(channelId)}/devices`)).devices;
  }

  /** `{user_id, username}` by id. */
  user(userId) {
    return this.request("GET", `/api/v1/users/${encodeURIComponent(userId)}`);
  }

  /** `{user_id, username}` by username (case-insensitive); 404 when there is none. */
  userByName(username) {
    return this.request("GET", `/api/v1/users?${new URLSearchParams({ username })}`);
  }

  /** Opens (finds or creates) the direct conversation with these users: `{id, created}`. */
  openDirect(userIds) {
    return this.request("POST", "/api/v1/dms", { user_ids: userIds });
  }

  /** A page of history, oldest first: `{messages, has_more}`. */
  history(channelId, { before, after, limit = 50 } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== undefined) query.set("before", String(before));
    if (after !== undefined) query.set("after", String(after));
    return this.request("GET", `${channelPath(channelId)}/messages?${query}`);
  }

  /** A thread: `{root, replies, has_more}`. */
  thread(channelId, rootId, { after } = {}) {
    const query = new URLSearchParams({ limit: "200" });
    if (after !== undefined) query.set("after", String(after));
    return this.request("GET", `${channelPath(channelId)}/threads/${encodeURIComponent(rootId)}?${query}`);
  }

  editMessage(channelId, messageId, body) {
    return this.request("PATCH", messagePath(channelId, messageId), { body });
  }

  deleteMessage(channelId, messageId) {
    return this.request("DELETE", messagePath(channelId, messageId));
  }

  /** Adds (`on`) or removes the caller's reaction. */
  react(channelId, messageId, emoji, on) {
    const path = `${messagePath(channelId, messageId)}/reactions/${encodeURIComponent(emoji)}`;
    return this.request(on ? "PUT" : "DELETE", path);
  }

  markRead(channelId, seq) {
    return this.request("POST", `${channelPath(channelId)}/read`, { seq });
  }

  /** Uploads a File (its bytes as the body, its type as Content-Type): the FileInfo. */
  uploadFile(channelId, file) {
    const query = new URLSearchParams({ name: file.name || "file" });
    return this.request("POST", `${channelPath(channelId)}/files?${query}`, file);
  }

  /** A file's bytes as a Blob, fetched with the Authorization header (never a token in a URL). */
  download(fileId) {
    return this.request("GET", `/api/v1/files/${encodeURIComponent(fileId)}`, undefined, { as: "blob" });
  }

  // ---- Devices ----

  /** The caller's devices, revoked ones included, oldest first. */
  async devices() {
    return (await this.request("GET", "/api/v1/devices")).devices;
  }

  /** One of the caller's devices; 404 for anyone else's. */
  device(deviceId) {
    return this.request("GET", devicePath(deviceId));
  }

  /** Registers a device: `{device_id, api_key}`; the key is never shown again. */
  createDevice(name, kind) {
    const body = { name };
    if (kind) body.kind = kind;
    return this.request("POST", "/api/v1/devices", body);
  }

  revokeDevice(deviceId) {
    return this.request("DELETE", devicePath(deviceId));
  }

  /** Posts the device's events in this channel (`null`: nowhere). */
  linkDeviceChannel(deviceId, channelId) {
    return this.request("PUT", `${devicePath(deviceId)}/channel`, { channel_id: channelId });
  }

  /** The names of the device's metrics that hold points. */
  async deviceMetrics(deviceId) {
    return (await this.request("GET", `${devicePath(deviceId)}/metrics`)).metrics;
  }

  /** A metric per bucket: `{from, to, bucket, buckets: [{start, count, min, max, avg, last}]}`. */
  telemetry(deviceId, { metric, from, to, bucket }) {
    const query = new URLSearchParams({ metric, from: String(from), to: String(to), bucket: String(bucket) });
    return this.request("GET", `${devicePath(deviceId)}/telemetry?${query}`);
  }

  /** Sends a command: the stored command (`{id, status, …}`); the answer comes as `command_result`. */
  sendCommand(deviceId, name, args) {
    return this.request("POST", `${devicePath(deviceId)}/commands`, { name, args });
  }

  command(deviceId, commandId) {
    return this.request("GET", `${devicePath(deviceId)}/commands/${encodeURIComponent(commandId)}`);
  }

  async search(q, { channel, author } = {}) {
    const query = new URLSearchParams({ q });
    if (channel) query.set("channel", channel);
    if (author) query.set("author", author);
    return (await this.request("GET", `/api/v1/search?${query}`)).messages;
  }
}

function channelPath(channelId) {
  return `/api/v1/channels/${encodeURIComponent(channelId)}`;
}

function devicePath(deviceId) {
  return `/api/v1/devices/${encodeURIComponent(deviceId)}`;
}

function messagePath(channelId, messageId) {
  return `${channelPath(channelId)}/messages/${encodeURIComponent(messageId)}`;
}
