// The web client end to end: Debian's Chromium driven by playwright-core against the real
// server binary. Run with `node --test` in tests/e2e (see scripts/setup-e2e.sh).
//
// The steps share one server and three users, so they run in order; each wait is bounded.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.join(here, "screenshots");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const WAIT = 15_000;
// The client polls the channel list every 10 s (no membership push yet).
const CHANNEL_DISCOVERY = 25_000;
const PASSWORD = "violet trombone orbits quietly";
const OLDER_MESSAGES = 70;

let server;
let browser;
const users = {}; // name → {context, page, errors, userId}
const state = {};

async function newUser(name, { viewport = { width: 1280, height: 800 }, setup } = {}) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(WAIT);
  if (setup) await setup(context);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(`uncaught: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && /Content Security Policy|Refused to/.test(msg.text())) errors.push(msg.text());
  });
  await page.goto(server.origin);
  users[name] = { name, context, page, errors };
  return users[name];
}

async function register(user) {
  const { page } = user;
  await page.fill("#register-username", user.name);
  await page.fill("#register-password", PASSWORD);
  await page.click("#register-form button[type=submit]");
  await page.locator("#app-view").waitFor({ state: "visible" });
  user.userId = await page.inputValue("#my-user-id");
  assert.match(user.userId, /^[0-9a-f-]{36}$/);
}

async function login(user) {
  const { page } = user;
  await page.fill("#login-username", user.name);
  await page.fill("#login-password", PASSWORD);
  await page.click("#login-form button[type=submit]");
  await page.locator("#app-view").waitFor({ state: "visible" });
}

function channelButton(page, name) {
  return page.locator(`#channel-list button[data-channel-name="${name}"]`);
}

async function openChannel(page, name, timeout = WAIT) {
  await channelButton(page, name).waitFor({ timeout });
  await channelButton(page, name).click();
  await page.locator("#channel-title").filter({ hasText: name }).waitFor();
  await page.locator("#connection-status[data-state=online]").waitFor();
}

async function send(page, text) {
  await page.fill("#composer-input", text);
  await page.press("#composer-input", "Enter");
}

function messageWithText(page, text) {
  return page.locator("#message-list li:not([data-pending]) .body", { hasText: text });
}

/** The seqs rendered in the message list, in page order. */
function renderedSeqs(page) {
  return page.$$eval("#message-list li[data-seq]", (items) => items.map((li) => Number(li.dataset.seq)));
}

function assertContiguous(seqs, from, to) {
  assert.equal(new Set(seqs).size, seqs.length, `duplicates in ${seqs}`);
  assert.deepEqual(seqs, Array.from({ length: to - from + 1 }, (_, i) => from + i));
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

describe("web client", { timeout: 300_000 }, () => {
  before(async () => {
    await mkdir(shots, { recursive: true });
    server = await startServer({ logFile: path.join(shots, "server.log") });
    // playwright-core gives each launch a fresh, temporary user-data dir of its own.
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
    await browser?.close().catch(() => {});
    await server?.stop();
  });

  test("the page is served with its security headers", async () => {
    const res = await fetch(server.origin + "/", { signal: AbortSignal.timeout(WAIT) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-security-policy"), /default-src 'self'/);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("cache-control"), "no-cache");
    const missing = await fetch(server.origin + "/assets/nope.js", { signal: AbortSignal.timeout(WAIT) });
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, "not_found");
  });

  test("two users register through the UI; a weak password shows the server's reason", async () => {
    // A's socket goes through a route the test can cut, to check reconnection later.
    state.links = [];
    state.outage = false;
    const alice = await newUser("alice", {
      setup: (context) => context.routeWebSocket(/\/ws$/, (ws) => {
        if (state.outage) {
          ws.close({ code: 1001, reason: "test outage" });
          return;
        }
        state.links.push({ ws, server: ws.connectToServer() });
      }),
    });
    await alice.page.fill("#register-username", "alice");
    await alice.page.fill("#register-password", "password");
    await alice.page.click("#register-form button[type=submit]");
    await alice.page.locator("#register-error", { hasText: /12 characters/ }).waitFor();
    await alice.page.screenshot({ path: path.join(shots, "login.png"), fullPage: true });
    await register(alice);
    const bob = await newUser("bob");
    await register(bob);
    assert.notEqual(alice.userId, bob.userId);
  });

  test("A creates a private channel and adds B by user id; both see it", async () => {
    const { alice, bob } = users;
    await alice.page.fill("#new-channel-name", "secret-plans");
    await alice.page.check("#new-channel-private");
    await alice.page.click("#new-channel-form button[type=submit]");
    await openChannel(alice.page, "secret-plans");
    state.channelId = await channelButton(alice.page, "secret-plans").getAttribute("data-channel-id");
    await alice.page.click("#members-panel summary");
    await alice.page.fill("#add-member-id", bob.userId);
    await alice.page.click("#add-member-form button[type=submit]");
    await alice.page.locator("#add-member-result", { hasText: "Added." }).waitFor();
    await openChannel(bob.page, "secret-plans", CHANNEL_DISCOVERY);
  });

  test("messages arrive live both ways; Shift+Enter makes a new line", async () => {
    const { alice, bob } = users;
    await send(alice.page, "hello from alice");
    await messageWithText(bob.page, "hello from alice").waitFor();
    await bob.page.fill("#composer-input", "line one");
    await bob.page.press("#composer-input", "Shift+Enter");
    await bob.page.type("#composer-input", "line two");
    await bob.page.press("#composer-input", "Enter");
    await messageWithText(alice.page, "line one\nline two").waitFor();
    // Rendered as text: markup in a message stays text.
    await send(alice.page, "<b>not bold</b> <img src=x onerror=alert(1)>");
    await messageWithText(bob.page, "<b>not bold</b>").waitFor();
    assert.equal(await bob.page.locator("#message-list b, #message-list img").count(), 0);
  });

  test("a channel with unseen messages shows an unread badge until opened", async () => {
    const { alice, bob } = users;
    await alice.page.fill("#new-channel-name", "random");
    await alice.page.click("#new-channel-form button[type=submit]");
    await openChannel(alice.page, "random");
    await alice.page.click("#members-panel summary");
    await alice.page.fill("#add-member-id", bob.userId);
    await alice.page.click("#add-member-form button[type=submit]");
    await alice.page.locator("#add-member-result", { hasText: "Added." }).waitFor();
    for (const text of ["unread one", "unread two", "unread three"]) await send(alice.page, text);
    await messageWithText(alice.page, "unread three").waitFor();
    const badge = channelButton(bob.page, "random").locator(".badge");
    await badge.filter({ hasText: "3" }).waitFor({ timeout: CHANNEL_DISCOVERY });
    await bob.page.screenshot({ path: path.join(shots, "channels.png") });
    await openChannel(bob.page, "random");
    await messageWithText(bob.page, "unread three").waitFor();
    await badge.waitFor({ state: "detached" });
    await openChannel(bob.page, "secret-plans");
    await openChannel(alice.page, "secret-plans");
  });

  test("older history loads when scrolling back", async () => {
    const { alice, bob } = users;
    for (let i = 1; i <= OLDER_MESSAGES; i += 1) {
      await send(alice.page, i === 20 ? "the launch code is pineapple" : `filler message ${i}`);
    }
    await messageWithText(alice.page, `filler message ${OLDER_MESSAGES}`).waitFor();
    await eventually(async () => (await alice.page.locator("#message-list li[data-pending]").count()) === 0,
      "every message acknowledged");
    await messageWithText(bob.page, `filler message ${OLDER_MESSAGES}`).waitFor();
    state.lastSeq = OLDER_MESSAGES + 3;
    await alice.page.screenshot({ path: path.join(shots, "conversation.png") });

    // B reloads mid-conversation: tokens were in memory only, so B logs in again.
    await bob.page.reload();
    await bob.page.locator("#auth-view").waitFor({ state: "visible" });
    await login(bob);
    await openChannel(bob.page, "secret-plans");
    await messageWithText(bob.page, `filler message ${OLDER_MESSAGES}`).waitFor();
    const first = await renderedSeqs(bob.page);
    assert.ok(first.length < state.lastSeq, `the first page holds only the newest (${first.length})`);
    await eventually(async () => {
      await bob.page.$eval("#message-scroll", (el) => { el.scrollTop = 0; });
      return (await bob.page.locator('#message-list li[data-seq="1"]').count()) === 1;
    }, "the oldest message after scrolling back");
    await messageWithText(bob.page, "hello from alice").waitFor();
    await messageWithText(bob.page, "line one\nline two").waitFor();
    assertContiguous(await renderedSeqs(bob.page), 1, state.lastSeq);
  });

  test("search finds a message and opens its channel", async () => {
    const { bob } = users;
    await bob.page.fill("#search-input", "pineapple");
    await bob.page.press("#search-input", "Enter");
    const result = bob.page.locator("#search-results button", { hasText: "the launch code is pineapple" });
    await result.waitFor();
    await bob.page.screenshot({ path: path.join(shots, "search.png") });
    await result.click();
    await bob.page.locator("#message-list li.highlight", { hasText: "pineapple" }).waitFor();
  });

  test("a third user neither sees nor opens the private channel", async () => {
    const carol = await newUser("carol");
    await register(carol);
    await carol.page.locator("#connection-status[data-state=online]").waitFor();
    // The list has loaded (empty) and stays without the channel past a poll.
    await carol.page.locator("#channel-list-empty").waitFor({ state: "visible" });
    await carol.page.fill("#search-input", "pineapple");
    await carol.page.press("#search-input", "Enter");
    await carol.page.locator("#search-status", { hasText: "0 messages found." }).waitFor();
    assert.equal(await channelButton(carol.page, "secret-plans").count(), 0);
    // Directly, with C's own session: the channel is "not found", as if it did not exist.
    const { body: tokens } = await api("POST", "/api/v1/auth/login", { body: { username: "carol", password: PASSWORD } });
    const history = await api("GET", `/api/v1/channels/${state.channelId}/messages`, { token: tokens.access_token });
    assert.equal(history.status, 404);
    const join = await api("POST", `/api/v1/channels/${state.channelId}/members`, {
      token: tokens.access_token, body: { user_id: carol.userId },
    });
    assert.equal(join.status, 404);
  });

  test("after a dropped connection A resyncs without loss or duplicates", async () => {
    const { alice, bob } = users;
    assert.ok(state.links.length > 0, "A's socket went through the test's route");
    state.outage = true;
    for (const link of state.links.splice(0)) {
      await link.ws.close({ code: 1001, reason: "test outage" }).catch(() => {});
      await link.server.close().catch(() => {});
    }
    await alice.page.locator("#connection-status:not([data-state=online])").waitFor();
    for (const text of ["missed one", "missed two", "missed three"]) await send(bob.page, text);
    await messageWithText(bob.page, "missed three").waitFor();
    await send(alice.page, "sent while offline");
    await alice.page.locator("#message-list li[data-pending]", { hasText: "sent while offline" }).waitFor();
    assert.equal(await messageWithText(alice.page, "missed").count(), 0);
    await new Promise((r) => setTimeout(r, 1_500));
    state.outage = false;
    await alice.page.locator("#connection-status[data-state=online]").waitFor({ timeout: 45_000 });
    await messageWithText(alice.page, "missed three").waitFor();
    await messageWithText(alice.page, "sent while offline").waitFor();
    await messageWithText(bob.page, "sent while offline").waitFor();
    const lastSeq = state.lastSeq + 4;
    await eventually(async () => (await renderedSeqs(alice.page)).at(-1) === lastSeq, "A's newest seq");
    const seqs = await renderedSeqs(alice.page);
    assertContiguous(seqs, seqs[0], lastSeq);
    assert.equal(await messageWithText(alice.page, "sent while offline").count(), 1);
    assert.equal(await messageWithText(bob.page, "sent while offline").count(), 1);
    for (const text of ["missed one", "missed two", "missed three"]) {
      assert.equal(await messageWithText(alice.page, text).count(), 1, text);
    }
  });

  test("the layout works at phone width", async () => {
    const { bob } = users;
    await bob.page.setViewportSize({ width: 390, height: 844 });
    await bob.page.locator("#composer-input").waitFor({ state: "visible" });
    await bob.page.waitForTimeout(300); // the sidebar's slide out of view
    const overflow = await bob.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling (${overflow}px too wide)`);
    await bob.page.screenshot({ path: path.join(shots, "phone-conversation.png") });
    await bob.page.click("#menu-toggle");
    await channelButton(bob.page, "random").waitFor({ state: "visible" });
    await bob.page.waitForTimeout(300); // the drawer's slide-in
    await bob.page.screenshot({ path: path.join(shots, "phone-channels.png") });
    await bob.page.keyboard.press("Escape");
    assert.equal(await bob.page.getAttribute("#menu-toggle", "aria-expanded"), "false");
  });

  test("no page threw or broke the content security policy", () => {
    for (const user of Object.values(users)) assert.deepEqual(user.errors, [], user.name);
  });
});
