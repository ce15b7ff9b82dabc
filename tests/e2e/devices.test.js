// Devices in the web client end to end: a user registers a device through the UI (its key
// shown once), the test connects as that device over a real WebSocket and sends telemetry and
// heartbeats, answers a command sent from the UI, and the device's events show in chat under
// its name. Run with `node --test` in tests/e2e (see scripts/setup-e2e.sh).
//
// The steps share one server, so they run in order; each wait is bounded. Screenshots land
// in tests/e2e/screenshots/ (gitignored).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.js";
import { DeviceSocket } from "./device-socket.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.join(here, "screenshots");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const WAIT = 15_000;
const PASSWORD = "violet trombone orbits quietly";
const DEVICE = "Greenhouse sensor";
/** Readings 30 s apart over the last 4 minutes (a device's clock may be 5 minutes off at most). */
const READINGS = 9;

let server;
let browser;
const users = {}; // name → {context, page, errors, urls, userId, token}
const state = {};

async function newUser(name, { viewport = { width: 1280, height: 860 } } = {}) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(WAIT);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.origin });
  const page = await context.newPage();
  const errors = [];
  const urls = [];
  page.on("pageerror", (err) => errors.push(`uncaught: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy|Refused to/.test(msg.text())) errors.push(msg.text());
  });
  page.on("request", (request) => urls.push(request.url()));
  page.on("websocket", (ws) => urls.push(ws.url()));
  await page.goto(server.origin);
  users[name] = { name, context, page, errors, urls };
  return users[name];
}

async function register(user) {
  const { page } = user;
  await page.fill("#register-username", user.name);
  await page.fill("#register-password", PASSWORD);
  await page.click("#register-form button[type=submit]");
  await page.locator("#app-view").waitFor({ state: "visible" });
  await page.locator("#my-username", { hasText: user.name }).waitFor();
  await page.locator("#connection-status[data-state=online]").waitFor();
  const login = await api("POST", "/api/v1/auth/login", { body: { username: user.name, password: PASSWORD } });
  assert.equal(login.status, 200);
  user.token = login.body.access_token;
  user.userId = (await api("GET", "/api/v1/me", { token: user.token })).body.user_id;
}

async function api(method, pathname, { token, body } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(server.origin + pathname, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT),
  });
  return { status: res.status, body: res.status === 204 ? null : await res.json() };
}

function channelButton(page, name) {
  return page.locator(`#channel-list button[data-channel-name="${name}"]`);
}

async function openChannel(page, name) {
  await channelButton(page, name).click();
  await page.locator("#channel-title").filter({ hasText: name }).waitFor();
  await page.locator("#conversation").waitFor({ state: "visible" });
}

/** A message of the timeline whose body has `text`. */
function message(page, text) {
  return page.locator("#message-list li[data-seq]", { has: page.locator(".body", { hasText: text }) });
}

function deviceEntry(page, name = DEVICE) {
  return page.locator(`#device-list button[data-device-name="${name}"]`);
}

async function openDevices(page) {
  await page.click("#devices-open");
  await page.locator("#device-view").waitFor({ state: "visible" });
}

/** Waits until `check` resolves truthy; bounded. */
async function eventually(check, what, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

function connectDevice(key) {
  return DeviceSocket.connect(`${server.origin.replace(/^http/, "ws")}/ws`, ["unhidra.v1", `device.${key}`]);
}

describe("devices in the web client", { timeout: 300_000 }, () => {
  before(async () => {
    await mkdir(shots, { recursive: true });
    server = await startServer({ logFile: path.join(shots, "server-devices.log") });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      args: [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
    });
  });

  after(async () => {
    await state.device?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await server?.stop();
  });

  test("A registers and makes a channel that B is in", async () => {
    const alice = await newUser("alice");
    await register(alice);
    const bob = await newUser("bob");
    await register(bob);
    await alice.page.fill("#new-channel-name", "greenhouse");
    await alice.page.click("#new-channel-form button[type=submit]");
    await alice.page.locator("#channel-title", { hasText: "greenhouse" }).waitFor();
    state.channelId = await channelButton(alice.page, "greenhouse").getAttribute("data-channel-id");
    const added = await api("POST", `/api/v1/channels/${state.channelId}/members`, {
      token: alice.token, body: { user_id: bob.userId },
    });
    assert.equal(added.status, 204);
    await openChannel(bob.page, "greenhouse");
  });

  test("a device registered through the UI shows its key once, with a copy button", async () => {
    const { page } = users.alice;
    await openDevices(page);
    await page.locator("#device-list-empty").waitFor({ state: "visible" });
    // The name is required, and the server's reason for a bad kind is shown.
    await page.click("#register-device-form button[type=submit]");
    await page.locator("#register-device-error", { hasText: "name" }).waitFor();
    await page.fill("#register-device-name", DEVICE);
    await page.fill("#register-device-kind", "not a kind!");
    await page.click("#register-device-form button[type=submit]");
    await page.locator("#register-device-error", { hasText: "kind" }).waitFor();
    await page.fill("#register-device-kind", "esp32");
    await page.click("#register-device-form button[type=submit]");

    await page.locator("#device-key-box").waitFor({ state: "visible" });
    await page.locator("#device-key-warning", { hasText: "Shown only once" }).waitFor();
    const key = await page.inputValue("#device-key");
    assert.match(key, /^unh_dk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    state.key = key;
    await page.click("#device-key-copy");
    await page.locator("#device-key-status", { hasText: "Copied" }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);

    // Listed, offline, and selected.
    const entry = deviceEntry(page);
    await entry.waitFor();
    assert.equal(await entry.getAttribute("data-state"), "offline");
    await entry.locator(".state-badge", { hasText: "offline" }).waitFor();
    assert.equal(await entry.getAttribute("aria-current"), "true");
    await page.locator("#device-name", { hasText: DEVICE }).waitFor();
    state.deviceId = await entry.getAttribute("data-device-id");
    await page.locator("#device-facts [data-fact=kind] dd", { hasText: "esp32" }).waitFor();
    await page.screenshot({ path: path.join(shots, "device-key.png") });

    // Once stored, the key leaves the page for good; the API never shows it either.
    await page.click("#device-key-done");
    await page.locator("#device-key-box").waitFor({ state: "hidden" });
    assert.equal(await page.inputValue("#device-key"), "");
    assert.ok(!(await page.content()).includes(key.slice(24)), "the key is gone from the page");
    const listed = await api("GET", "/api/v1/devices", { token: users.alice.token });
    assert.ok(!JSON.stringify(listed.body).includes(key.slice(24)));
    assert.equal(await page.locator("#device-facts [data-fact=key] code").textContent(), `${key.slice(0, 23)}_…`);
  });

  test("the device is linked to the channel from the UI", async () => {
    const { page } = users.alice;
    await page.selectOption("#device-channel", state.channelId);
    await page.click("#device-channel-form button[type=submit]");
    await page.locator("#device-channel-status", { hasText: "posted in #greenhouse" }).waitFor();
    const device = await api("GET", `/api/v1/devices/${state.deviceId}`, { token: users.alice.token });
    assert.equal(device.body.channel_id, state.channelId);
  });

  test("the device connects and reports: online, with its firmware, live", async () => {
    const { page } = users.alice;
    const device = await connectDevice(state.key);
    state.device = device;
    assert.equal(device.protocol, "unhidra.v1");
    assert.equal((await device.next("welcome")).principal.kind, "device");
    const entry = deviceEntry(page);
    await page.locator(`#device-list button[data-device-id="${state.deviceId}"][data-state=online]`).waitFor();
    await entry.locator(".state-badge", { hasText: "online" }).waitFor();

    const now = Date.now();
    for (let i = 0; i < READINGS; i += 1) {
      const ts = new Date(now - (READINGS - 1 - i) * 30_000).toISOString();
      device.send({ type: "telemetry", ts, metrics: { temp: 20 + i * 0.5, humidity: 60 - i } });
    }
    device.send({ type: "heartbeat", firmware_version: "1.4.2", free_memory: 81_234, uptime_secs: 4_000 });
    await device.settle();
    assert.deepEqual(device.frames.filter((f) => f.type === "error"), [], "the server took every frame");

    await entry.locator("[data-fact=firmware]", { hasText: "firmware 1.4.2" }).waitFor();
    await entry.locator("[data-fact=memory]", { hasText: "79.3 KiB free" }).waitFor();
    await entry.locator("[data-fact=seen]", { hasText: "Last seen now" }).waitFor();
    await page.locator("#device-facts [data-fact=firmware] dd", { hasText: "1.4.2" }).waitFor();
    await page.locator("#device-facts [data-fact=uptime] dd", { hasText: "1 h 6 min" }).waitFor();
    await page.locator("#devices-count", { hasText: "1/1 online" }).waitFor();
  });

  test("the chart draws the chosen metric's readings, with its latest value as text", async () => {
    const { page } = users.alice;
    // The metrics are read again as the device reports; Refresh does it at once.
    await page.click("#chart-refresh");
    await page.locator("#chart-metric option[value=temp]").waitFor({ state: "attached" });
    assert.deepEqual(await page.$$eval("#chart-metric option", (o) => o.map((x) => x.value)), ["humidity", "temp"]);
    await page.selectOption("#chart-metric", "temp");
    const svg = page.locator("#chart svg");
    await page.locator("#chart svg title", { hasText: "temp, last hour" }).waitFor({ state: "attached" });
    // One-minute buckets over the hour: the readings of 4 minutes fall in 4 or 5 of them.
    const hourPoints = await eventually(async () => Number(await svg.getAttribute("data-points")), "points");
    assert.ok(hourPoints >= 4 && hourPoints <= 5, `points in the last hour: ${hourPoints}`);
    assert.equal(await svg.locator("circle.point").count(), hourPoints);
    assert.equal(await svg.locator("polygon.band").count() + await svg.locator("rect.band").count() >= 1, true);
    await page.locator("#chart-latest", { hasText: "Latest temp: 24" }).waitFor();
    const desc = await svg.locator("desc").textContent();
    assert.match(desc, new RegExp(`${READINGS} readings`));
    assert.match(desc, /from 20 to 24/);
    assert.equal(await svg.getAttribute("role"), "img");
    await page.locator("#telemetry-card").screenshot({ path: path.join(shots, "device-chart.png") });
    // The view's columns scroll by themselves; the page never does.
    assert.equal(await page.evaluate(() => document.documentElement.scrollHeight - window.innerHeight), 0);

    // 15-second buckets over 15 minutes: one point per reading.
    await page.selectOption("#chart-range", "900");
    await page.locator("#chart svg title", { hasText: "temp, last 15 minutes" }).waitFor({ state: "attached" });
    assert.equal(await page.locator("#chart svg circle.point").count(), READINGS);
    const box = await page.locator("#chart svg").boundingBox();
    assert.ok(box.width > 300 && box.height > 150, `a readable chart: ${JSON.stringify(box)}`);
    await page.locator("#chart-latest", { hasText: "Latest temp: 24" }).waitFor();
    await page.selectOption("#chart-metric", "humidity");
    await page.locator("#chart-latest", { hasText: `Latest humidity: ${60 - (READINGS - 1)}` }).waitFor();
    await page.selectOption("#chart-metric", "temp");
    await page.locator("#chart svg title", { hasText: "temp, last 15 minutes" }).waitFor({ state: "attached" });
  });

  test("a command sent from the UI reaches the device, and its answer shows", async () => {
    const { page } = users.alice;
    const { device } = state;
    // Arguments that are not JSON are refused before anything is sent.
    await page.fill("#command-name", "blink");
    await page.fill("#command-args", "{times: 3}");
    await page.click("#command-form button[type=submit]");
    await page.locator("#command-error", { hasText: "not JSON" }).waitFor();
    await page.fill("#command-args", '{"times": 3, "colour": "<b>green</b>"}');
    await page.click("#command-form button[type=submit]");

    const command = await device.next("command");
    assert.equal(command.name, "blink");
    assert.deepEqual(command.args, { times: 3, colour: "<b>green</b>" });
    const item = page.locator(`#command-log li[data-command-id="${command.id}"]`);
    await item.waitFor();
    await item.locator(".command-outcome", { hasText: /waiting/ }).waitFor();
    device.send({ type: "command_result", id: command.id, ok: true, output: { blinked: 3, note: "<i>done</i>" } });
    await page.locator(`#command-log li[data-command-id="${command.id}"][data-status=completed][data-ok=true]`).waitFor();
    await item.locator(".command-outcome", { hasText: "done" }).waitFor();
    await item.locator(".command-output", { hasText: '"blinked": 3' }).waitFor();
    await page.locator("#command-status", { hasText: "blink: done" }).waitFor({ state: "attached" });
    // Shown as text, never as markup.
    assert.equal(await page.locator("#command-log b, #command-log i").count(), 0);
    await page.locator("#chart svg circle.point").first().waitFor();
    await page.screenshot({ path: path.join(shots, "devices.png") });
    state.commandId = command.id;
  });

  test("in chat, the device's events show its name and a device marker, not its id", async () => {
    const { alice, bob } = users;
    await openChannel(alice.page, "greenhouse");
    const online = message(alice.page, "is online");
    await online.waitFor();
    await online.locator(".sender.device", { hasText: DEVICE }).waitFor();
    await online.locator(".sender .device-tag", { hasText: "device" }).waitFor();
    const result = message(alice.page, "command `blink` done");
    await result.locator(".sender", { hasText: DEVICE }).waitFor();
    assert.ok(!(await alice.page.textContent("#message-list")).includes(state.deviceId), "no raw id shown");

    // B is in the channel but does not own the device: a graceful stand-in, not the raw id.
    const seen = message(bob.page, "is online");
    await seen.locator(".sender", { hasText: "unknown sender" }).waitFor();
    assert.equal(await seen.locator(".sender").getAttribute("title"), state.deviceId);
    assert.ok(!(await bob.page.textContent("#message-list")).includes(state.deviceId));
  });

  test("the device goes: offline at once in the list, and in chat under its name", async () => {
    const { page } = users.alice;
    await openDevices(page);
    await deviceEntry(page).click();
    await page.locator(`#device-list button[data-device-id="${state.deviceId}"][data-state=online]`).waitFor();
    await state.device.close();
    state.device = null;
    const entry = page.locator(`#device-list button[data-device-id="${state.deviceId}"][data-state=offline]`);
    await entry.waitFor();
    await entry.locator(".state-badge", { hasText: "offline" }).waitFor();
    // What it last reported stays; "last seen" is a time now.
    await entry.locator("[data-fact=firmware]", { hasText: "firmware 1.4.2" }).waitFor();
    assert.doesNotMatch(await entry.locator("[data-fact=seen]").textContent(), /now|never/);
    await page.locator("#devices-count", { hasText: "0/1 online" }).waitFor();
    await page.screenshot({ path: path.join(shots, "device-offline.png") });

    await openChannel(page, "greenhouse");
    const offline = message(page, "is offline");
    await offline.locator(".sender.device", { hasText: DEVICE }).waitFor();
    await page.screenshot({ path: path.join(shots, "device-events.png") });
  });

  test("revoking asks for confirmation, then the key stops working", async () => {
    const { page } = users.alice;
    await openDevices(page);
    await deviceEntry(page).click();
    await page.getByRole("button", { name: "Revoke device…" }).click();
    await page.locator("#device-revoke-actions", { hasText: `Revoke ${DEVICE} for good?` }).waitFor();
    await page.getByRole("button", { name: "Keep it" }).click();
    await page.getByRole("button", { name: "Revoke device…" }).waitFor();
    const kept = await api("GET", `/api/v1/devices/${state.deviceId}`, { token: users.alice.token });
    assert.equal(kept.body.revoked_at, null);

    await page.getByRole("button", { name: "Revoke device…" }).click();
    await page.getByRole("button", { name: "Revoke for good" }).click();
    await deviceEntry(page).locator(".state-badge", { hasText: "revoked" }).waitFor();
    await page.locator("#device-facts [data-fact=revoked]").waitFor();
    await page.locator("#command-card").waitFor({ state: "hidden" });
    await page.locator("#devices-count").waitFor({ state: "hidden" });
    await assert.rejects(connectDevice(state.key), (err) => err.status === 401);
    // The telemetry stays readable.
    await page.locator("#chart svg circle.point").first().waitFor();
  });

  test("the devices view works at phone width", async () => {
    const { page } = users.alice;
    await page.click("#devices-close");
    await page.locator("#conversation").waitFor({ state: "visible" });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300); // the sidebar's slide out of view
    await page.click("#menu-toggle");
    await page.locator("#devices-open").waitFor({ state: "visible" });
    await page.waitForTimeout(300);
    await page.click("#devices-open");
    await page.locator("#device-view").waitFor({ state: "visible" });
    assert.equal(await page.getAttribute("#menu-toggle", "aria-expanded"), "false");
    await deviceEntry(page).click();
    await page.locator("#chart svg circle.point").first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling (${overflow}px too wide)`);
    const box = await page.locator("#chart svg").boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 390, `the chart fits: ${JSON.stringify(box)}`);
    await page.locator("#telemetry-card").scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, "phone-device.png") });
    await page.locator("#device-list").scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, "phone-devices.png") });
  });

  test("no page threw, broke the content security policy, or put a key or token in a URL", () => {
    for (const user of Object.values(users)) {
      assert.deepEqual(user.errors, [], user.name);
      const leaks = user.urls.filter((u) => /eyJ|bearer|token|unh_dk_/i.test(u));
      assert.deepEqual(leaks, [], `${user.name}: URLs with a credential`);
    }
  });
});
