// Moderation in the web client, with the real ML workers from .venv-ml (scripts/setup-ml.sh;
// .ci/run makes it) and `ml.moderation = "hold"`: a message the check flags is shown to its
// author as held for review and to nobody else, until an administrator releases it; then
// everyone sees it, marked with the reasons it was flagged for. Without .venv-ml the suite
// says so and is skipped (CI has it).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { root, startServer } from "./server.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.join(here, "screenshots");
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const WAIT = 15_000;
const PASSWORD = "violet trombone orbits quietly";
const PYTHON = path.join(root, ".venv-ml/bin/python");
const ABUSIVE = "you are a fucking idiot and a piece of shit";

let server;
let browser;
const users = {};

async function api(method, pathname, { token, body } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(server.origin + pathname, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(WAIT),
  });
  return { status: res.status, body: res.status === 204 ? null : await res.json() };
}

async function newUser(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(`uncaught: ${err.message}`));
  await page.goto(server.origin);
  await page.fill("#register-username", name);
  await page.fill("#register-password", PASSWORD);
  await page.click("#register-form button[type=submit]");
  await page.locator("#connection-status[data-state=online]").waitFor();
  const login = await api("POST", "/api/v1/auth/login", { body: { username: name, password: PASSWORD } });
  const token = login.body.access_token;
  const userId = (await api("GET", "/api/v1/me", { token })).body.user_id;
  users[name] = { name, page, errors, token, userId };
  return users[name];
}

/** `unhidra admin create-user NAME --admin` on the server's data dir, the password on stdin. */
function createAdmin(name) {
  return new Promise((resolve, reject) => {
    const child = spawn(server.bin, ["admin", "create-user", name, "--admin", "--data-dir", server.dataDir],
      { stdio: ["pipe", "ignore", "inherit"] });
    const timer = setTimeout(() => child.kill("SIGKILL"), WAIT);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`admin create-user exited with ${code}`));
    });
    child.stdin.end(`${PASSWORD}\n`);
  });
}

async function say(page, text) {
  await page.fill("#composer-input", text);
  await page.press("#composer-input", "Enter");
}

describe("moderation in the web client", { timeout: 180_000, skip: existsSync(PYTHON) ? false : "no .venv-ml (scripts/setup-ml.sh)" }, () => {
  before(async () => {
    await mkdir(shots, { recursive: true });
    server = await startServer({
      logFile: path.join(shots, "server-moderation.log"),
      extraConfig: `\n[ml]\npython = ${JSON.stringify(PYTHON)}\nworkers = 1\nmoderation = "hold"\n`,
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM, headless: true, timeout: 60_000,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.stop();
  });

  test("a held message shows only to its author until an administrator releases it", async () => {
    const alice = await newUser("alice");
    const bob = await newUser("bob");
    await alice.page.fill("#new-channel-name", "lounge");
    await alice.page.click("#new-channel-form button[type=submit]");
    await alice.page.locator("#channel-title", { hasText: "lounge" }).waitFor();
    const channelId = await alice.page.locator('#channel-list button[data-channel-name="lounge"]').getAttribute("data-channel-id");
    assert.equal((await api("POST", `/api/v1/channels/${channelId}/members`, { token: alice.token, body: { user_id: bob.userId } })).status, 204);
    await bob.page.locator('#channel-list button[data-channel-name="lounge"]').click();
    await bob.page.locator("#channel-title", { hasText: "lounge" }).waitFor();

    await say(alice.page, "hello bob, welcome to the lounge");
    await bob.page.locator("#message-list li[data-seq] .body", { hasText: "welcome to the lounge" }).waitFor();
    await say(alice.page, ABUSIVE);
    const held = alice.page.locator("#message-list li.held", { hasText: "held for review" });
    await held.waitFor();
    await alice.page.screenshot({ path: path.join(shots, "moderation-held.png") });
    // Bob sees what came after it, and not it.
    await say(alice.page, "sorry, that was rude");
    await bob.page.locator("#message-list li[data-seq] .body", { hasText: "that was rude" }).waitFor();
    assert.equal(await bob.page.locator("#message-list li", { hasText: "idiot" }).count(), 0);

    // An administrator (made with the CLI, as an operator would) releases it.
    await createAdmin("root");
    const root = (await api("POST", "/api/v1/auth/login", { body: { username: "root", password: PASSWORD } })).body.access_token;
    const queue = (await api("GET", "/api/v1/admin/moderation", { token: root })).body;
    assert.equal(queue.held.length, 1);
    assert.ok(queue.held[0].reasons.length > 0);
    const released = await api("POST", `/api/v1/admin/moderation/held/${queue.held[0].id}/release`, { token: root, body: {} });
    assert.equal(released.status, 200);

    // Now both see it, after the apology (it takes its place when released), flagged.
    for (const user of [alice, bob]) {
      const item = user.page.locator("#message-list li[data-seq]", { has: user.page.locator(".body", { hasText: "idiot" }) });
      await item.waitFor();
      await item.locator(".flagged").waitFor();
    }
    assert.equal(await alice.page.locator("#message-list li.held").count(), 0, "the held placeholder is gone");
    await bob.page.screenshot({ path: path.join(shots, "moderation-released.png") });
    assert.deepEqual([...alice.errors, ...bob.errors], []);
  });
});
