// Starts the built `unhidra` binary on a free port with a fresh data dir, and stops it.
// The test builds nothing: UNHIDRA_BIN names the binary (default target/debug/unhidra).

import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createWriteStream } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import readline from "node:readline";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");

// Limits raised so a test's registrations, logins and bursts of messages are not refused.
const CONFIG = `
[rate_limits]
login_per_minute = 1000
register_per_hour = 1000
ws_connect_per_minute_per_ip = 1000
ws_connect_per_minute_per_user = 1000
ws_messages_per_second = 1000
`;

/** Starts the server; resolves to {origin, dataDir, stop()} once it logged "API listening".
 * `extraConfig` is TOML appended to the test configuration. */
export { root };

export async function startServer({ logFile, startTimeoutMs = 30_000, extraConfig = "" } = {}) {
  const bin = path.resolve(root, process.env.UNHIDRA_BIN ?? "target/debug/unhidra");
  const dir = await mkdtemp(path.join(tmpdir(), "unhidra-e2e-"));
  const config = path.join(dir, "config.toml");
  await writeFile(config, CONFIG + extraConfig);
  const child = spawn(bin, [
    "serve",
    "--data-dir", path.join(dir, "data"),
    "--listen", "127.0.0.1:0",
    "--metrics-listen", "127.0.0.1:0",
    "--log-format", "json",
    "--config", config,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  const log = logFile ? createWriteStream(logFile) : null;
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(killer);
    }
    log?.end();
    await rm(dir, { recursive: true, force: true });
  };

  try {
    const addr = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "API listening" within ${startTimeoutMs} ms`)), startTimeoutMs);
      child.once("error", (err) => reject(new Error(`cannot start ${bin}: ${err.message}`)));
      exited.then(({ code, signal }) => reject(new Error(`${bin} exited early (${code ?? signal})`)));
      readline.createInterface({ input: child.stderr }).on("line", (line) => {
        log?.write(`${line}\n`);
        let record;
        try {
          record = JSON.parse(line);
        } catch {
          return;
        }
        if (record.fields?.message === "API listening" && record.fields.addr) {
          clearTimeout(timer);
          resolve(record.fields.addr);
        }
      });
    });
    return { origin: `http://${addr}`, dataDir: path.join(dir, "data"), bin, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
