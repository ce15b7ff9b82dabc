// The interactive API reference (/api/docs): Swagger UI, vendored into the binary, renders
// the server's own OpenAPI document in Chromium under the strict Content-Security-Policy
// without a single violation, makes no request outside the server's origin, and "Try it out"
// reaches the API. Run with `node --test` in tests/e2e (see scripts/setup-e2e.sh).

import { after, before, test } from "node:test";
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

let server;
let browser;

before(async () => {
  await mkdir(shots, { recursive: true });
  server = await startServer({ logFile: path.join(shots, "api-docs-server.log") });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the API reference renders every operation under the strict CSP and can call the API", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const problems = [];
  const requests = [];
  page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console: ${msg.text()}`);
  });
  page.on("request", (request) => requests.push(request.url()));
  // Playwright's init scripts are not page scripts, so the policy does not apply to this one:
  // it records every violation the page's own scripts and styles cause.
  await page.addInitScript(() => {
    window.cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.cspViolations.push(`${e.violatedDirective}: ${e.blockedURI || "inline"} (${e.sourceFile}:${e.lineNumber})`);
    });
  });

  const response = await page.goto(`${server.origin}/api/docs`);
  assert.equal(response.status(), 200);
  const csp = response.headers()["content-security-policy"];
  assert.match(csp, /script-src 'self';/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);

  await page.locator(".swagger-ui .info .title", { hasText: "Unhidra API" }).waitFor();
  const document = await (await fetch(`${server.origin}/api/v1/openapi.json`)).json();
  const operations = Object.values(document.paths).reduce((n, item) => n + Object.keys(item).length, 0);
  await page.waitForFunction((n) => document.querySelectorAll(".opblock").length === n, operations);

  // "Try it out" on GET /healthz: a real request from the page to the API.
  const healthz = page.locator("#operations-ops-ops\\.healthz, .opblock-get:has([data-path='/healthz'])").first();
  await healthz.locator(".opblock-summary").click();
  await healthz.locator("button.try-out__btn").click();
  await healthz.locator("button.execute").click();
  await healthz.locator(".live-responses-table .response-col_status", { hasText: "200" }).waitFor();

  await page.screenshot({ path: path.join(shots, "api-docs.png"), fullPage: false });
  const violations = await page.evaluate(() => window.cspViolations);
  assert.deepEqual(violations, [], "Content-Security-Policy violations");
  assert.deepEqual(problems, [], "errors in the page");
  const foreign = requests.filter((url) => !url.startsWith(server.origin) && !url.startsWith("data:"));
  assert.deepEqual(foreign, [], "requests outside the server's origin");
  await context.close();
});
