// The web client end to end: Debian's Chromium driven by playwright-core against the real
// server binary. Run with `node --test` in tests/e2e (see scripts/setup-e2e.sh).
//
// The steps share one server and three users, so they run in order; each wait is bounded.
// Screenshots of the main views land in tests/e2e/screenshots/ (gitignored).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";
import { chromium } from "playwright-core";
import { startServer } from "./server.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.join(here, "screenshots");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const WAIT = 15_000;
const PASSWORD = "violet trombone orbits quietly";
const OLDER_MESSAGES = 70;
const PNG = solidPng(96, 64, [47, 91, 211]);

let server;
let browser;
const users = {}; // name → {context, page, errors, urls, userId, token}
const state = {};

/** A PNG of one colour, to upload as an image. */
function solidPng(width, height, [r, g, b]) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(zlib.crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bits per channel
  header[9] = 2; // RGB
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: width }, () => [r, g, b]).flat())]);
  const pixels = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", zlib.deflateSync(pixels)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

async function newUser(name, { viewport = { width: 1280, height: 800 }, setup } = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  context.setDefaultTimeout(WAIT);
  if (setup) await setup(context);
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
  user.token = await restLogin(user.name);
  user.userId = (await api("GET", "/api/v1/me", { token: user.token })).body.user_id;
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

function dmButton(page, name) {
  return page.locator(`#dm-list button[data-channel-name="${name}"]`);
}

async function openChannel(page, name) {
  await channelButton(page, name).click();
  await page.locator("#channel-title").filter({ hasText: name }).waitFor();
  await page.locator("#connection-status[data-state=online]").waitFor();
}

async function send(page, text) {
  await page.fill("#composer-input", text);
  await page.press("#composer-input", "Enter");
}

/** A message of the timeline (not a pending one) whose body has `text`. */
function message(page, text) {
  return page.locator("#message-list li[data-seq]", { has: page.locator(".body", { hasText: text }) });
}

function messageWithText(page, text) {
  return page.locator("#message-list li:not([data-pending]) .body", { hasText: text });
}

function threadMessage(page, text) {
  return page.locator("#thread-list li[data-seq]", { has: page.locator(".body", { hasText: text }) });
}

/** The seqs rendered in the timeline, in page order. */
function renderedSeqs(page) {
  return page.$$eval("#message-list li[data-seq]", (items) => items.map((li) => Number(li.dataset.seq)));
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

async function restLogin(username) {
  const { status, body } = await api("POST", "/api/v1/auth/login", { body: { username, password: PASSWORD } });
  assert.equal(status, 200);
  return body.access_token;
}

/** Every message of a channel over REST, oldest first. */
async function allMessages(token, channelId) {
  let before;
  const all = [];
  for (let i = 0; i < 100; i += 1) {
    const query = new URLSearchParams({ limit: "100" });
    if (before !== undefined) query.set("before", String(before));
    const { body } = await api("GET", `/api/v1/channels/${channelId}/messages?${query}`, { token });
    all.unshift(...body.messages);
    if (!body.has_more) return all;
    before = body.messages[0].seq;
  }
  throw new Error("too many pages");
}

/** The seqs the timeline should show: every message that is not a thread reply. */
async function timelineSeqs(token, channelId) {
  return (await allMessages(token, channelId)).filter((m) => !m.thread_root).map((m) => m.seq);
}

/** Makes the page look hidden (or visible again) to the client, as a switched-away tab. */
function setHidden(page, hidden) {
  return page.evaluate((hide) => {
    if (hide) Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    else delete document.visibilityState;
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

describe("web client", { timeout: 420_000 }, () => {
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
    const csp = res.headers.get("content-security-policy");
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /img-src 'self' data: blob:/);
    assert.doesNotMatch(csp, /script-src[^;]*blob:/);
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("cache-control"), "no-cache");
    const missing = await fetch(server.origin + "/assets/nope.js", { signal: AbortSignal.timeout(WAIT) });
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, "not_found");
  });

  test("two users register through the UI; a weak password shows the server's reason", async () => {
    // A's socket goes through a route the test can cut (to check reconnection later), and
    // which records the frames the server sends (to check what a resubscription replays).
    state.links = [];
    state.outage = false;
    state.frames = []; // [{link, frame}]
    const alice = await newUser("alice", {
      setup: (context) => context.routeWebSocket(/\/ws$/, (ws) => {
        if (state.outage) {
          ws.close({ code: 1001, reason: "test outage" });
          return;
        }
        const link = state.links.length;
        const upstream = ws.connectToServer();
        upstream.onMessage((data) => {
          try {
            state.frames.push({ link, frame: JSON.parse(data) });
          } catch {
            // not JSON: the client will say so
          }
          ws.send(data);
        });
        ws.onMessage((data) => upstream.send(data));
        ws.onClose((code, reason) => upstream.close({ code, reason }).catch(() => {}));
        upstream.onClose((code, reason) => ws.close({ code, reason }).catch(() => {}));
        state.links.push({ ws, server: upstream });
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

  test("A creates a private channel and adds B by username; B sees it at once", async () => {
    const { alice, bob } = users;
    await alice.page.fill("#new-channel-name", "secret-plans");
    await alice.page.check("#new-channel-private");
    await alice.page.click("#new-channel-form button[type=submit]");
    await alice.page.locator("#channel-title", { hasText: "secret-plans" }).waitFor();
    state.channelId = await channelButton(alice.page, "secret-plans").getAttribute("data-channel-id");
    await alice.page.click("#members-panel summary");
    await alice.page.fill("#add-member-name", "nobody-here");
    await alice.page.click("#add-member-form button[type=submit]");
    await alice.page.locator("#add-member-result", { hasText: "no user" }).waitFor();
    await alice.page.fill("#add-member-name", "Bob");
    await alice.page.click("#add-member-form button[type=submit]");
    await alice.page.locator("#add-member-result", { hasText: "Added bob." }).waitFor();
    // The member list names people (not ids) and shows who is online.
    await alice.page.locator("#member-list li", { hasText: "bob" }).locator(".presence[data-status=online]").waitFor();
    await alice.page.locator("#members-summary", { hasText: "Members (2)" }).waitFor();
    // No polling any more: channel_added brings it to B well within one short wait.
    await channelButton(bob.page, "secret-plans").waitFor({ timeout: 5_000 });
    await openChannel(bob.page, "secret-plans");
  });

  test("messages arrive live both ways, with names; Shift+Enter makes a new line; typing shows", async () => {
    const { alice, bob } = users;
    await send(alice.page, "hello from alice");
    await messageWithText(bob.page, "hello from alice").waitFor();
    await message(bob.page, "hello from alice").locator(".sender", { hasText: "alice" }).waitFor();
    await bob.page.fill("#composer-input", "line one");
    await bob.page.press("#composer-input", "Shift+Enter");
    await bob.page.type("#composer-input", "line two");
    await alice.page.locator("#typing-indicator", { hasText: "bob is typing…" }).waitFor();
    assert.equal(await bob.page.textContent("#typing-indicator"), "", "one's own typing is not shown");
    await bob.page.press("#composer-input", "Enter");
    await messageWithText(alice.page, "line one\nline two").waitFor();
    // The notice goes when the message comes.
    await alice.page.locator("#typing-indicator:empty").waitFor();
    // Rendered as text: markup in a message stays text.
    await send(alice.page, "<b>not bold</b> <img src=x onerror=alert(1)>");
    await messageWithText(bob.page, "<b>not bold</b>").waitFor();
    assert.equal(await bob.page.locator("#message-list b, #message-list img").count(), 0);
    // B has read it all: A sees it seen.
    await alice.page.locator("#seen-by", { hasText: "Seen by bob" }).waitFor();
  });

  test("unread and mention badges show until the channel is opened", async () => {
    const { alice, bob } = users;
    await alice.page.fill("#new-channel-name", "random");
    await alice.page.click("#new-channel-form button[type=submit]");
    await alice.page.locator("#channel-title", { hasText: "random" }).waitFor();
    await alice.page.click("#members-panel summary");
    await alice.page.fill("#add-member-name", "bob");
    await alice.page.click("#add-member-form button[type=submit]");
    await alice.page.locator("#add-member-result", { hasText: "Added bob." }).waitFor();
    for (const text of ["unread one", "unread two, @bob look", "unread three"]) await send(alice.page, text);
    await messageWithText(alice.page, "unread three").waitFor();
    const button = channelButton(bob.page, "random");
    await button.locator(".badge", { hasText: "3" }).waitFor();
    await button.locator(".mention-badge", { hasText: "@1" }).waitFor();
    assert.match(await button.getAttribute("aria-label"), /3 unread, 1 mention/);
    await bob.page.screenshot({ path: path.join(shots, "channels.png") });
    await openChannel(bob.page, "random");
    await messageWithText(bob.page, "unread three").waitFor();
    await button.locator(".badge").waitFor({ state: "detached" });
    await button.locator(".mention-badge").waitFor({ state: "detached" });
    // The server agrees: nothing unread for B any more.
    const { body } = await api("GET", "/api/v1/channels", { token: bob.token });
    const random = body.channels.find((c) => c.name === "random");
    await eventually(async () => {
      const list = (await api("GET", "/api/v1/channels", { token: bob.token })).body.channels;
      const c = list.find((x) => x.id === random.id);
      return c.unread === 0 && c.mentions === 0;
    }, "B's read position stored");
    await openChannel(bob.page, "secret-plans");
    await openChannel(alice.page, "secret-plans");
  });

  test("a reply goes to the thread, and the root shows how many there are", async () => {
    const { alice, bob } = users;
    await send(alice.page, "what's for lunch?");
    const root = message(bob.page, "what's for lunch?");
    await root.waitFor();
    await root.getByRole("button", { name: "Reply", exact: true }).click();
    await bob.page.locator("#thread-panel").waitFor({ state: "visible" });
    await threadMessage(bob.page, "what's for lunch?").waitFor();
    assert.equal(await bob.page.evaluate(() => document.activeElement.id), "thread-input");
    await bob.page.fill("#thread-input", "soup, I think");
    await bob.page.press("#thread-input", "Enter");
    await threadMessage(bob.page, "soup, I think").waitFor();
    // A: "1 reply" on the root; the reply itself stays out of the timeline.
    const aliceRoot = message(alice.page, "what's for lunch?");
    await aliceRoot.locator("button.replies", { hasText: "1 reply" }).waitFor();
    assert.equal(await messageWithText(alice.page, "soup, I think").count(), 0);
    await aliceRoot.locator("button.replies").click();
    await threadMessage(alice.page, "soup, I think").waitFor();
    await alice.page.fill("#thread-input", "with olives");
    await alice.page.press("#thread-input", "Enter");
    await threadMessage(bob.page, "with olives").waitFor();
    await root.locator("button.replies", { hasText: "2 replies" }).waitFor();
    await bob.page.screenshot({ path: path.join(shots, "thread.png") });
    // Escape closes the panel and gives focus back.
    await alice.page.press("#thread-input", "Escape");
    await alice.page.locator("#thread-panel").waitFor({ state: "hidden" });
    await bob.page.click("#thread-close");
    await bob.page.locator("#thread-panel").waitFor({ state: "hidden" });
  });

  test("reactions toggle, from the keyboard too, and show on both sides", async () => {
    const { alice, bob } = users;
    const bobMessage = message(bob.page, "hello from alice");
    // Keyboard only: the React button opens the picker with focus on its first emoji.
    await bobMessage.getByRole("button", { name: "React", exact: true }).focus();
    await bob.page.keyboard.press("Enter");
    assert.equal(await bob.page.evaluate(() => document.activeElement.getAttribute("aria-label")), "React with 👍");
    await bob.page.keyboard.press("Enter");
    const bobThumb = bobMessage.locator("button.reaction[data-emoji='👍']");
    await bobThumb.filter({ hasText: "👍 1" }).waitFor();
    assert.equal(await bobThumb.getAttribute("aria-pressed"), "true");
    const aliceThumb = message(alice.page, "hello from alice").locator("button.reaction[data-emoji='👍']");
    await aliceThumb.filter({ hasText: "👍 1" }).waitFor();
    assert.equal(await aliceThumb.getAttribute("aria-pressed"), "false");
    await aliceThumb.click();
    await bobThumb.filter({ hasText: "👍 2" }).waitFor();
    await aliceThumb.filter({ hasText: "👍 2" }).waitFor();
    assert.equal(await aliceThumb.getAttribute("aria-pressed"), "true");
    await bobThumb.click(); // B takes theirs back
    await aliceThumb.filter({ hasText: "👍 1" }).waitFor();
    assert.equal(await bobThumb.getAttribute("aria-pressed"), "false");
  });

  test("edits show as (edited) and deletions as a tombstone, live", async () => {
    const { alice, bob } = users;
    await send(alice.page, "meet at 10");
    await message(bob.page, "meet at 10").waitFor();
    // While edited, the item shows a form instead of its body: hold on to it by id.
    const id = await message(alice.page, "meet at 10").getAttribute("data-id");
    const mine = alice.page.locator(`#message-list li[data-id="${id}"]`);
    await mine.getByRole("button", { name: "Edit", exact: true }).click();
    const editor = mine.getByRole("textbox", { name: "Edit message" });
    assert.equal(await editor.inputValue(), "meet at 10");
    await editor.fill("meet at 11 instead");
    await editor.press("Enter");
    const edited = message(bob.page, "meet at 11 instead");
    await edited.locator(".edited", { hasText: "(edited)" }).waitFor();
    assert.equal(await messageWithText(bob.page, "meet at 10").count(), 0);
    await send(alice.page, "oops, wrong channel");
    const oops = message(alice.page, "oops, wrong channel");
    await message(bob.page, "oops, wrong channel").waitFor();
    state.deletedId = await oops.getAttribute("data-id");
    await oops.getByRole("button", { name: "Delete" }).click();
    await oops.getByRole("button", { name: "Delete for everyone" }).click();
    const tombstone = bob.page.locator(`#message-list li[data-id="${state.deletedId}"] .tombstone`);
    await tombstone.filter({ hasText: "message deleted" }).waitFor();
    assert.equal(await messageWithText(bob.page, "oops, wrong channel").count(), 0);
    // B may not edit or delete A's message.
    assert.equal(await message(bob.page, "meet at 11 instead").getByRole("button", { name: "Edit", exact: true }).count(), 0);
    assert.equal(await message(bob.page, "meet at 11 instead").getByRole("button", { name: "Delete" }).count(), 0);
  });

  test("files: uploaded, sent with a message, previewed and downloaded", async () => {
    const { alice, bob } = users;
    await alice.page.setInputFiles("#composer-file", [
      { name: "dot.png", mimeType: "image/png", buffer: PNG },
      { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("meeting notes: bring snacks\n") },
    ]);
    await alice.page.locator("#composer-files li", { hasText: "notes.txt" }).waitFor();
    await send(alice.page, "the files for tomorrow");
    const received = message(bob.page, "the files for tomorrow");
    await received.locator(".attachment", { hasText: "notes.txt" }).waitFor();
    // The image is shown from a blob: URL (fetched with the token in a header).
    const preview = received.locator("img.preview[alt='dot.png']");
    await eventually(() => preview.evaluate((img) => img.src.startsWith("blob:") && img.complete && img.naturalWidth === 96),
      "the image preview");
    await message(alice.page, "the files for tomorrow").locator("img.preview[alt='dot.png']").waitFor();
    const [download] = await Promise.all([
      bob.page.waitForEvent("download"),
      received.getByRole("button", { name: /^notes\.txt/ }).click(),
    ]);
    assert.equal(download.suggestedFilename(), "notes.txt");
    assert.equal(await readFile(await download.path(), "utf8"), "meeting notes: bring snacks\n");
    await bob.page.screenshot({ path: path.join(shots, "attachments.png") });
  });

  test("a direct conversation opens by username, with presence that changes", async () => {
    const { alice, bob } = users;
    await alice.page.fill("#new-dm-username", "bob");
    await alice.page.click("#new-dm-form button[type=submit]");
    await alice.page.locator("#channel-title", { hasText: "bob" }).waitFor();
    const bobDot = dmButton(alice.page, "bob").locator(".presence");
    await dmButton(alice.page, "bob").locator(".presence[data-status=online]").waitFor();
    await send(alice.page, "just between us");
    await dmButton(bob.page, "alice").locator(".badge", { hasText: "1" }).waitFor();
    // B switches away: away for A; back: online.
    await setHidden(bob.page, true);
    await dmButton(alice.page, "bob").locator(".presence[data-status=away]").waitFor();
    assert.equal(await bobDot.getAttribute("aria-label"), "away");
    await setHidden(bob.page, false);
    await dmButton(alice.page, "bob").locator(".presence[data-status=online]").waitFor();
    await dmButton(bob.page, "alice").click();
    await messageWithText(bob.page, "just between us").waitFor();
    await bob.page.screenshot({ path: path.join(shots, "direct.png") });
    // Opening it again finds the same conversation.
    await alice.page.fill("#new-dm-username", "bob");
    await alice.page.click("#new-dm-form button[type=submit]");
    await messageWithText(alice.page, "just between us").waitFor();
    assert.equal(await alice.page.locator("#dm-list li").count(), 1);
    await openChannel(alice.page, "secret-plans");
    await openChannel(bob.page, "secret-plans");
  });

  test("older history loads when scrolling back; a reload keeps it all", async () => {
    const { alice, bob } = users;
    for (let i = 1; i <= OLDER_MESSAGES; i += 1) {
      await send(alice.page, i === 20 ? "the launch code is pineapple" : `filler message ${i}`);
    }
    await messageWithText(alice.page, `filler message ${OLDER_MESSAGES}`).waitFor();
    await eventually(async () => (await alice.page.locator("#message-list li[data-pending]").count()) === 0,
      "every message acknowledged");
    await messageWithText(bob.page, `filler message ${OLDER_MESSAGES}`).waitFor();
    await alice.page.screenshot({ path: path.join(shots, "conversation.png") });

    // B reloads mid-conversation: tokens were in memory only, so B logs in again.
    assert.deepEqual(await bob.page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie]), [0, 0, ""]);
    await bob.page.reload();
    await bob.page.locator("#auth-view").waitFor({ state: "visible" });
    await login(bob);
    await openChannel(bob.page, "secret-plans");
    await messageWithText(bob.page, `filler message ${OLDER_MESSAGES}`).waitFor();
    const expected = await timelineSeqs(alice.token, state.channelId);
    const first = await renderedSeqs(bob.page);
    assert.ok(first.length < expected.length, `the first page holds only the newest (${first.length})`);
    await eventually(async () => {
      await bob.page.$eval("#message-scroll", (el) => { el.scrollTop = 0; });
      return (await bob.page.locator("#history-status", { hasText: "beginning" }).count()) === 1;
    }, "the beginning after scrolling back");
    // Everything, once, in order; replies only in their thread; edits, reactions, deletions kept.
    assert.deepEqual(await renderedSeqs(bob.page), expected);
    await messageWithText(bob.page, "line one\nline two").waitFor();
    await message(bob.page, "what's for lunch?").locator("button.replies", { hasText: "2 replies" }).waitFor();
    assert.equal(await messageWithText(bob.page, "with olives").count(), 0);
    await message(bob.page, "meet at 11 instead").locator(".edited").waitFor();
    await message(bob.page, "hello from alice").locator("button.reaction", { hasText: "👍 1" }).waitFor();
    await bob.page.locator(`#message-list li[data-id="${state.deletedId}"] .tombstone`).waitFor();
    const files = message(bob.page, "the files for tomorrow");
    await files.locator(".attachment", { hasText: "notes.txt" }).waitFor();
    await files.locator("img.preview[alt='dot.png'][src^='blob:']").waitFor();
  });

  test("search finds a message and opens its channel", async () => {
    const { bob } = users;
    await bob.page.fill("#search-input", "pineapple");
    await bob.page.press("#search-input", "Enter");
    const result = bob.page.locator("#search-results button", { hasText: "the launch code is pineapple" });
    await result.waitFor();
    await result.locator(".sender", { hasText: "alice" }).waitFor();
    await bob.page.screenshot({ path: path.join(shots, "search.png") });
    await result.click();
    await bob.page.locator("#message-list li.highlight", { hasText: "pineapple" }).waitFor();
    // A reply found by search opens in its thread.
    await bob.page.fill("#search-input", "olives");
    await bob.page.press("#search-input", "Enter");
    await bob.page.locator("#search-results button", { hasText: "with olives" }).click();
    await bob.page.locator("#thread-list li.highlight", { hasText: "with olives" }).waitFor();
    await bob.page.click("#thread-close");
  });

  test("a third user neither sees nor opens the private channel", async () => {
    const carol = await newUser("carol");
    await register(carol);
    await carol.page.locator("#connection-status[data-state=online]").waitFor();
    await carol.page.locator("#channel-list-empty").waitFor({ state: "visible" });
    await carol.page.fill("#search-input", "pineapple");
    await carol.page.press("#search-input", "Enter");
    await carol.page.locator("#search-status", { hasText: "0 messages found." }).waitFor();
    assert.equal(await channelButton(carol.page, "secret-plans").count(), 0);
    // Directly, with C's own session: the channel is "not found", as if it did not exist.
    const history = await api("GET", `/api/v1/channels/${state.channelId}/messages`, { token: carol.token });
    assert.equal(history.status, 404);
    const join = await api("POST", `/api/v1/channels/${state.channelId}/members`, {
      token: carol.token, body: { user_id: carol.userId },
    });
    assert.equal(join.status, 404);
  });

  test("after a dropped connection A resyncs messages and events, each once", async () => {
    const { alice, bob } = users;
    assert.ok(state.links.length > 0, "A's socket went through the test's route");
    // The frames with a place in the channel's timeline (docs/protocol.md); `receipt`
    // and `subscribed` carry a seq too, but a position, not a place.
    const timeline = new Set(["message", "message_edited", "message_deleted", "reaction_added",
      "reaction_removed", "member_joined", "member_left", "channel_updated"]);
    const seqFrames = (link) => state.frames
      .filter((f) => f.link === link && f.frame.channel === state.channelId && timeline.has(f.frame.type))
      .map((f) => f.frame.seq);
    const cut = async () => {
      state.outage = true;
      for (const link of state.links) {
        await link.ws.close({ code: 1001, reason: "test outage" }).catch(() => {});
        await link.server.close().catch(() => {});
      }
      await alice.page.locator("#connection-status:not([data-state=online])").waitFor();
    };
    const lastSeq = async () => (await api("GET", "/api/v1/channels", { token: alice.token })).body.channels
      .find((c) => c.id === state.channelId).last_seq;
    const lastBefore = await lastSeq();
    await cut();
    for (const text of ["missed one", "missed two", "missed three"]) await send(bob.page, text);
    await messageWithText(bob.page, "missed three").waitFor();
    // Events too: a reaction and an edit while A is away.
    const bobMeet = message(bob.page, "meet at 11 instead");
    await bobMeet.getByRole("button", { name: "React", exact: true }).click();
    await bobMeet.getByRole("button", { name: "React with 🎉" }).click();
    await bobMeet.locator("button.reaction", { hasText: "🎉 1" }).waitFor();
    await send(alice.page, "sent while offline");
    await alice.page.locator("#message-list li[data-pending]", { hasText: "sent while offline" }).waitFor();
    assert.equal(await messageWithText(alice.page, "missed").count(), 0);
    const linkBefore = state.links.length;
    state.outage = false;
    await alice.page.locator("#connection-status[data-state=online]").waitFor({ timeout: 45_000 });
    await messageWithText(alice.page, "missed three").waitFor();
    await messageWithText(alice.page, "sent while offline").waitFor();
    await messageWithText(bob.page, "sent while offline").waitFor();
    await message(alice.page, "meet at 11 instead").locator("button.reaction", { hasText: "🎉 1" }).waitFor();
    const expected = await timelineSeqs(alice.token, state.channelId);
    await eventually(async () => (await renderedSeqs(alice.page)).at(-1) === expected.at(-1), "A's newest seq");
    const seqs = await renderedSeqs(alice.page);
    assert.deepEqual(seqs, expected.slice(expected.indexOf(seqs[0])));
    assert.equal(await messageWithText(alice.page, "sent while offline").count(), 1);
    assert.equal(await messageWithText(bob.page, "sent while offline").count(), 1);
    for (const text of ["missed one", "missed two", "missed three"]) {
      assert.equal(await messageWithText(alice.page, text).count(), 1, text);
    }
    // The new connection replayed what was missed, messages and events, each once.
    const newest = await lastSeq();
    const replayed = state.links.slice(linkBefore).flatMap((_, i) => seqFrames(linkBefore + i));
    assert.deepEqual(replayed, Array.from({ length: newest - lastBefore }, (_, i) => lastBefore + 1 + i));

    // The newest entry is an event (B reacts, A sees it live); then a second outage with
    // nothing new: resubscribing replays nothing, because every timeline frame, event or
    // message, moved the resume point.
    const missed = message(bob.page, "missed three");
    await missed.getByRole("button", { name: "React", exact: true }).click();
    await missed.getByRole("button", { name: "React with 👀" }).click();
    await message(alice.page, "missed three").locator("button.reaction", { hasText: "👀 1" }).waitFor();
    const linkAgain = state.links.length;
    await cut();
    state.outage = false;
    await alice.page.locator("#connection-status[data-state=online]").waitFor({ timeout: 45_000 });
    await eventually(() => state.frames.some((f) => f.link >= linkAgain && f.frame.type === "subscribed" && f.frame.channel === state.channelId),
      "the resubscription");
    const again = state.links.slice(linkAgain).flatMap((_, i) => seqFrames(linkAgain + i));
    assert.deepEqual(again, []);
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
    // The thread panel covers the conversation on a phone.
    await message(bob.page, "what's for lunch?").locator("button.replies").click();
    await threadMessage(bob.page, "with olives").waitFor();
    const box = await bob.page.locator("#thread-panel").boundingBox();
    assert.ok(box.width >= 380 && box.x <= 1, `the thread panel fills the width (${JSON.stringify(box)})`);
    await bob.page.screenshot({ path: path.join(shots, "phone-thread.png") });
    await bob.page.click("#thread-close");
  });

  test("when B leaves, A sees B offline", async () => {
    const { alice, bob } = users;
    await dmButton(alice.page, "bob").locator(".presence[data-status=online]").waitFor();
    await bob.context.close();
    await dmButton(alice.page, "bob").locator(".presence[data-status=offline]").waitFor();
    await alice.page.locator("#member-list li", { hasText: "bob" }).locator(".presence[data-status=offline]").waitFor({ state: "attached" });
  });

  test("no page threw, broke the content security policy, or put a token in a URL", () => {
    for (const user of Object.values(users)) {
      assert.deepEqual(user.errors, [], user.name);
      const leaks = user.urls.filter((u) => /eyJ|bearer|token/i.test(u));
      assert.deepEqual(leaks, [], `${user.name}: URLs with a token`);
    }
  });
});
