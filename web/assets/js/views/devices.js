// Devices: the user's devices with their live state (`device_state` frames), registering
// one (its key is shown once), and for the one selected: its telemetry as a chart, sending
// it a command and seeing the answer (`command_result`), the channel its events go to, and
// revoking it. The view takes the conversation's place until closed, like search.

import { byId, busy, h } from "../dom.js";
import { formatTime, formatValue, telemetryChart } from "../chart.js";
import { presenceDot } from "./members.js";

/** Range (seconds) → bucket width (seconds) and how it reads. About 60–100 buckets each. */
const RANGES = new Map([
  [900, { bucket: 15, label: "last 15 minutes" }],
  [3600, { bucket: 60, label: "last hour" }],
  [21600, { bucket: 300, label: "last 6 hours" }],
  [86400, { bucket: 900, label: "last 24 hours" }],
  [604800, { bucket: 7200, label: "last 7 days" }],
]);
/** How often the chart of the selected device is read again while it is on screen. */
const REFRESH_MS = 15_000;
const COMMAND_NAME = /^[A-Za-z0-9._-]{1,64}$/;

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** Bytes as people read them: "79.3 KiB". */
export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

/** Seconds as people read them: "3 d 4 h", "2 h 5 min", "42 s". */
export function formatDuration(secs) {
  const d = Math.floor(secs / 86_400);
  const hours = Math.floor((secs % 86_400) / 3600);
  const min = Math.floor((secs % 3600) / 60);
  if (d) return `${d} d ${hours} h`;
  if (hours) return `${hours} h ${min} min`;
  if (min) return `${min} min`;
  return `${secs} s`;
}

/** A presence dot that only decorates: the badge next to it says the same in words. */
function quietDot(status) {
  const dot = presenceDot(status);
  dot.removeAttribute("role");
  dot.removeAttribute("aria-label");
  dot.setAttribute("aria-hidden", "true");
  return dot;
}

function whenEl(iso) {
  return h("time", { datetime: iso }, dateTimeFormat.format(new Date(iso)));
}

/** Unanswered statuses of a command (docs/api.md). */
const STATUS_TEXT = {
  queued: "waiting for the device",
  delivered: "delivered, waiting for the answer",
  expired: "expired unanswered",
};

export function setupDevices({ store, api, onShow, onClose }) {
  const view = byId("device-view");
  const conversation = byId("conversation");
  const openButton = byId("devices-open");
  const count = byId("devices-count");
  const list = byId("device-list");
  const empty = byId("device-list-empty");
  const detail = byId("device-detail");
  const nameHeading = byId("device-name");
  const facts = byId("device-facts");
  const metricSelect = byId("chart-metric");
  const rangeSelect = byId("chart-range");
  const chart = byId("chart");
  const latest = byId("chart-latest");
  const chartStatus = byId("chart-status");
  const commandCard = byId("command-card");
  const commandForm = byId("command-form");
  const commandName = byId("command-name");
  const commandArgs = byId("command-args");
  const commandError = byId("command-error");
  const commandStatus = byId("command-status");
  const commandLog = byId("command-log");
  const linkCard = byId("link-card");
  const linkForm = byId("device-channel-form");
  const linkSelect = byId("device-channel");
  const linkStatus = byId("device-channel-status");
  const revokeActions = byId("device-revoke-actions");
  const revokeError = byId("device-revoke-error");
  const registerForm = byId("register-device-form");
  const registerBox = byId("register-device");
  const registerError = byId("register-device-error");
  const keyBox = byId("device-key-box");
  const keyInput = byId("device-key");
  const keyStatus = byId("device-key-status");

  let selectedId = null;
  let metricsOf = null; // the device whose metric list is in the select
  let shown = null; // {series, label}: the chart on screen, drawn again when resized
  let chartRequest = 0; // answers to older requests are dropped
  let refreshTimer = null;
  let confirmingRevoke = null; // device id
  let drawnWidth = 0;
  const announced = new Set(); // command ids whose answer was announced

  const selected = () => (selectedId ? store.devices.get(selectedId) ?? null : null);
  const isOpen = () => !view.hidden;

  // ---- Opening and closing ----

  async function open(deviceId = selectedId) {
    onShow();
    conversation.hidden = true;
    view.hidden = false;
    openButton.setAttribute("aria-current", "true");
    render();
    if (deviceId) select(deviceId, { focus: false });
    clearInterval(refreshTimer);
    refreshTimer = setInterval(tick, REFRESH_MS);
    await reload();
    if (!selectedId) (list.querySelector("button") ?? byId("register-device-name")).focus();
  }

  function close({ restoreFocus = true } = {}) {
    if (!isOpen()) return;
    view.hidden = true;
    conversation.hidden = false;
    openButton.setAttribute("aria-current", "false");
    clearInterval(refreshTimer);
    forgetKey();
    onClose();
    if (restoreFocus) openButton.focus();
  }

  /** The device list and what became of commands sent, read again (after an outage, too). */
  async function reload() {
    try {
      store.setDevices(await api.devices());
    } catch (err) {
      empty.hidden = false;
      empty.textContent = `Could not load your devices: ${err.message}`;
      return;
    }
    await catchUpCommands();
  }

  /** Commands still unanswered here: their `command_result` may have passed while offline. */
  async function catchUpCommands() {
    const open = [...store.commands.values()].filter((c) => c.status === "queued" || c.status === "delivered");
    await Promise.all(open.map((c) => api.command(c.device_id, c.id).then((info) => store.putCommand(info), () => {})));
  }

  // ---- The list ----

  function stateBadge(device) {
    if (device.revoked_at) return h("span", { class: "state-badge", dataset: { state: "revoked" } }, "revoked");
    const online = device.state.online;
    return h("span", { class: "state-badge", dataset: { state: online ? "online" : "offline" } }, online ? "online" : "offline");
  }

  function lastSeen(device) {
    if (device.state.online) return "now";
    return device.state.last_seen_at ? dateTimeFormat.format(new Date(device.state.last_seen_at)) : "never";
  }

  function entry(d) {
    const st = d.state;
    const line = [["seen", `Last seen ${lastSeen(d)}`]];
    if (st.firmware_version) line.push(["firmware", `firmware ${st.firmware_version}`]);
    if (st.free_memory !== null && st.free_memory !== undefined) line.push(["memory", `${formatBytes(st.free_memory)} free`]);
    return h("li", {},
      h("button", {
        type: "button",
        class: "device-item",
        "aria-current": d.device_id === selectedId ? "true" : "false",
        dataset: { deviceId: d.device_id, deviceName: d.name, state: d.revoked_at ? "revoked" : st.online ? "online" : "offline" },
        onclick: () => select(d.device_id),
      },
      h("span", { class: "device-head" },
        quietDot(d.revoked_at ? "offline" : st.online ? "online" : "offline"),
        h("span", { class: "name" }, d.name),
        stateBadge(d)),
      h("span", { class: "device-line" },
        ...line.map(([fact, text]) => h("span", { dataset: { fact } }, text)))));
  }

  function renderList() {
    const devices = store.sortedDevices();
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.deviceId : null;
    list.replaceChildren(...devices.map(entry));
    if (focused) list.querySelector(`button[data-device-id="${CSS.escape(focused)}"]`)?.focus();
    empty.hidden = devices.length > 0;
    if (devices.length === 0) registerBox.open = true;
    empty.textContent = "No devices yet: register one below, then give its key to the device.";
    const live = devices.filter((d) => !d.revoked_at);
    const online = live.filter((d) => d.state.online).length;
    count.textContent = live.length ? `${online}/${live.length} online` : "";
    count.hidden = live.length === 0;
    openButton.setAttribute("aria-label", live.length
      ? `Your devices, ${online} of ${live.length} online` : "Your devices");
  }

  // ---- The selected device ----

  function select(deviceId, { focus = true } = {}) {
    const changed = deviceId !== selectedId;
    selectedId = deviceId;
    if (changed) {
      confirmingRevoke = null;
      commandError.textContent = "";
      linkStatus.textContent = "";
      revokeError.textContent = "";
      shown = null;
      metricsOf = null;
      chart.replaceChildren();
      latest.textContent = "";
    }
    render();
    if (!selected()) return;
    renderChannels();
    if (changed) loadMetrics();
    if (focus) {
      nameHeading.focus({ preventScroll: true });
      detail.scrollIntoView({ block: "start" });
    }
  }

  function renderDetail() {
    const d = selected();
    detail.hidden = !d;
    if (!d) return;
    nameHeading.textContent = d.name;
    const st = d.state;
    const rows = [
      ["state", "Status", stateBadge(d)],
      ["seen", "Last seen", st.online ? "now" : st.last_seen_at ? whenEl(st.last_seen_at) : "never"],
      ["firmware", "Firmware", st.firmware_version ?? "not reported"],
      ["memory", "Free memory", st.free_memory === null || st.free_memory === undefined ? "not reported" : formatBytes(st.free_memory)],
      ["uptime", "Up for", st.online && st.uptime_secs !== null && st.uptime_secs !== undefined ? formatDuration(st.uptime_secs) : "—"],
      ["kind", "Kind", d.kind ?? "—"],
      ["key", "Key", h("code", {}, `unh_dk_${d.key_id}_…`)],
      ["registered", "Registered", whenEl(d.created_at)],
    ];
    if (d.revoked_at) rows.push(["revoked", "Revoked", whenEl(d.revoked_at)]);
    facts.replaceChildren(...rows.map(([key, term, value]) =>
      h("div", { dataset: { fact: key } }, h("dt", {}, term), h("dd", {}, value))));
    commandCard.hidden = Boolean(d.revoked_at);
    linkCard.hidden = Boolean(d.revoked_at);
    renderRevoke(d);
    renderCommands();
  }

  function render() {
    renderList();
    renderDetail();
  }

  // ---- Telemetry ----

  async function loadMetrics() {
    const d = selected();
    if (!d) return;
    const id = d.device_id;
    let metrics;
    try {
      metrics = await api.deviceMetrics(id);
    } catch (err) {
      if (selectedId === id) chartStatus.textContent = `Could not load the metrics: ${err.message}`;
      return;
    }
    if (selectedId !== id) return;
    const keep = metricsOf === id ? metricSelect.value : "";
    metricsOf = id;
    metricSelect.replaceChildren(...metrics.map((m) => h("option", { value: m }, m)));
    metricSelect.disabled = metrics.length === 0;
    if (metrics.length === 0) {
      metricSelect.append(h("option", { value: "" }, "none yet"));
      shown = null;
      chart.replaceChildren();
      latest.textContent = "";
      chartStatus.textContent = "No telemetry yet: the chart appears when the device sends some.";
      return;
    }
    metricSelect.value = metrics.includes(keep) ? keep : metrics[0];
    await loadChart();
  }

  async function loadChart() {
    const d = selected();
    const metric = metricSelect.value;
    if (!d || !metric || metricsOf !== d.device_id) return;
    const range = Number(rangeSelect.value);
    const { bucket, label: rangeLabel } = RANGES.get(range) ?? RANGES.get(3600);
    // Buckets aligned to their width, so a refresh moves the chart a whole bucket at a time.
    const now = Math.floor(Date.now() / 1000);
    const to = (Math.floor(now / bucket) + 1) * bucket;
    const request = (chartRequest += 1);
    chartStatus.textContent = shown ? chartStatus.textContent : "Loading…";
    let series;
    try {
      series = await api.telemetry(d.device_id, { metric, from: to - range, to, bucket });
    } catch (err) {
      if (request === chartRequest) chartStatus.textContent = `Could not load ${metric}: ${err.message}`;
      return;
    }
    if (request !== chartRequest || selectedId !== d.device_id) return;
    shown = { series, label: `${metric}, ${rangeLabel}` };
    draw();
    const last = series.buckets.at(-1);
    latest.textContent = last
      ? `Latest ${metric}: ${formatValue(last.last)} (${formatTime(last.start, { long: range > 86_400 })})`
      : `No readings of ${metric} in the ${rangeLabel}.`;
    chartStatus.textContent = `Updated ${formatTime(now)}; ${bucket >= 60 ? `${bucket / 60} min` : `${bucket} s`} per point.`;
  }

  function draw() {
    if (!shown) return;
    drawnWidth = chart.clientWidth;
    const narrow = drawnWidth < 480;
    chart.replaceChildren(telemetryChart(shown.series, {
      label: shown.label, width: drawnWidth || 640, height: narrow ? 180 : 240,
    }));
  }

  new ResizeObserver(() => {
    // Hidden (width 0): drawn again when shown.
    if (shown && chart.clientWidth > 0 && Math.abs(chart.clientWidth - drawnWidth) > 4) draw();
  }).observe(chart);

  function tick() {
    if (!isOpen() || !selected() || document.visibilityState !== "visible") return;
    if (metricSelect.disabled || metricsOf !== selectedId) loadMetrics();
    else loadChart();
  }

  metricSelect.addEventListener("change", () => {
    shown = null;
    loadChart();
  });
  rangeSelect.addEventListener("change", () => loadChart());
  byId("chart-refresh").addEventListener("click", () => loadMetrics());

  // ---- Commands ----

  function renderCommands() {
    const d = selected();
    if (!d) return;
    const commands = store.commandsOf(d.device_id).reverse(); // newest first
    commandLog.replaceChildren(...commands.map((c) => {
      const done = c.status === "completed";
      const outcome = done ? (c.ok ? "done" : "failed") : STATUS_TEXT[c.status] ?? c.status ?? "sending…";
      const args = c.args === undefined || c.args === null ? "" : JSON.stringify(c.args);
      return h("li", { class: "command", dataset: { commandId: c.id, status: c.status ?? "", ok: done ? String(c.ok) : "" } },
        h("div", { class: "command-head" },
          h("code", { class: "command-name" }, c.name ?? "command"),
          args ? h("code", { class: "command-args" }, args) : null,
          h("span", { class: `command-outcome${done && !c.ok ? " failed" : ""}` }, outcome)),
        done && c.output !== null && c.output !== undefined
          ? h("pre", { class: "command-output" }, JSON.stringify(c.output, null, 2))
          : null);
    }));
  }

  commandForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const d = selected();
    if (!d) return;
    commandError.textContent = "";
    const name = commandName.value.trim();
    if (!COMMAND_NAME.test(name)) {
      commandError.textContent = "Name the command: 1 to 64 letters, digits, “.”, “_” or “-”.";
      commandName.focus();
      return;
    }
    let args = null;
    if (commandArgs.value.trim()) {
      try {
        args = JSON.parse(commandArgs.value);
      } catch (err) {
        commandError.textContent = `The arguments are not JSON: ${err.message}`;
        commandArgs.focus();
        return;
      }
    }
    busy(commandForm, async () => {
      try {
        const info = await api.sendCommand(d.device_id, name, args);
        store.putCommand(info);
        if (store.commands.get(info.id)?.status !== "completed") {
          commandStatus.textContent = `${name} sent to ${d.name}, waiting for the answer.`;
        }
      } catch (err) {
        commandError.textContent = err.message;
      }
    });
  });

  store.addEventListener("commands", (event) => {
    for (const c of store.commands.values()) {
      if (c.status !== "completed" || announced.has(c.id) || c.device_id !== selectedId) continue;
      announced.add(c.id);
      commandStatus.textContent = `${c.name ?? "command"}: ${c.ok ? "done" : "failed"}.`;
    }
    if (event.detail.deviceId === selectedId) renderCommands();
  });

  // ---- The channel its events go to ----

  function renderChannels() {
    const d = selected();
    if (!d) return;
    const focused = document.activeElement === linkSelect;
    const current = focused ? linkSelect.value : d.channel_id ?? "";
    const channels = store.sortedChannels().filter((c) => !c.archived || c.id === d.channel_id);
    const options = [h("option", { value: "" }, "nowhere (not linked)"),
      ...channels.map((c) => h("option", { value: c.id }, c.direct ? `direct: ${store.channelName(c)}` : `# ${c.name}`))];
    if (d.channel_id && !store.channels.has(d.channel_id)) {
      options.push(h("option", { value: d.channel_id }, "a channel you are no longer in"));
    }
    linkSelect.replaceChildren(...options);
    linkSelect.value = current;
  }

  linkForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const d = selected();
    if (!d) return;
    const channelId = linkSelect.value || null;
    linkStatus.textContent = "";
    busy(linkForm, async () => {
      try {
        await api.linkDeviceChannel(d.device_id, channelId);
        store.putDevice({ ...store.devices.get(d.device_id), channel_id: channelId });
        const channel = channelId ? store.channels.get(channelId) : null;
        linkStatus.textContent = channel
          ? `Its events are posted in ${channel.direct ? store.channelName(channel) : `#${channel.name}`}.`
          : "Its events are not posted anywhere.";
      } catch (err) {
        linkStatus.textContent = `Not saved: ${err.message}`;
      }
    });
  });

  // ---- Revoking ----

  function renderRevoke(d) {
    if (d.revoked_at) {
      revokeActions.replaceChildren(h("p", { class: "hint" }, "This device is revoked."));
      return;
    }
    const focused = revokeActions.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
    if (confirmingRevoke === d.device_id) {
      revokeActions.replaceChildren(
        h("p", { class: "warning", id: "device-revoke-question" }, `Revoke ${d.name} for good?`),
        h("button", {
          type: "button", class: "danger", dataset: { focus: "confirm" }, "aria-describedby": "device-revoke-question",
          onclick: () => revoke(d),
        }, "Revoke for good"),
        h("button", {
          type: "button", class: "secondary", dataset: { focus: "cancel" },
          onclick: () => {
            confirmingRevoke = null;
            renderRevoke(d);
            revokeActions.querySelector("[data-focus=revoke]")?.focus();
          },
        }, "Keep it"));
    } else {
      revokeActions.replaceChildren(h("button", {
        type: "button", class: "danger", dataset: { focus: "revoke" },
        onclick: () => {
          confirmingRevoke = d.device_id;
          revokeError.textContent = "";
          renderRevoke(d);
          revokeActions.querySelector("[data-focus=cancel]")?.focus();
        },
      }, "Revoke device…"));
    }
    if (focused) revokeActions.querySelector(`[data-focus="${focused}"]`)?.focus();
  }

  async function revoke(d) {
    confirmingRevoke = null;
    try {
      await api.revokeDevice(d.device_id);
      store.putDevice(await api.device(d.device_id));
      nameHeading.focus();
    } catch (err) {
      revokeError.textContent = `Not revoked: ${err.message}`;
      renderRevoke(d);
    }
  }

  // ---- Registering: the key, once ----

  registerForm.addEventListener("submit", (event) => {
    event.preventDefault();
    registerError.textContent = "";
    const name = byId("register-device-name").value.trim();
    const kind = byId("register-device-kind").value.trim();
    if (!name) {
      registerError.textContent = "Give the device a name.";
      byId("register-device-name").focus();
      return;
    }
    busy(registerForm, async () => {
      try {
        const created = await api.createDevice(name, kind || undefined);
        byId("register-device-name").value = "";
        byId("register-device-kind").value = "";
        showKey(name, created.api_key);
        registerBox.open = false;
        try {
          store.putDevice(await api.device(created.device_id));
        } catch {
          await reload();
        }
        select(created.device_id, { focus: false });
        keyInput.focus();
        keyInput.select();
      } catch (err) {
        registerError.textContent = err.message;
      }
    });
  });

  function showKey(name, key) {
    byId("device-key-name").textContent = name;
    keyInput.value = key;
    keyStatus.textContent = "";
    keyBox.hidden = false;
  }

  /** The key leaves the page: it is never shown again. */
  function forgetKey() {
    keyInput.value = "";
    keyBox.hidden = true;
    keyStatus.textContent = "";
  }

  byId("device-key-copy").addEventListener("click", async () => {
    const key = keyInput.value;
    try {
      await navigator.clipboard.writeText(key);
      keyStatus.textContent = "Copied. Store it on the device now.";
    } catch {
      // No clipboard access (an insecure origin, or refused): select it for copying by hand.
      keyInput.focus();
      keyInput.select();
      keyStatus.textContent = "Copying was not allowed here: the key is selected, copy it with Ctrl+C (⌘C).";
    }
  });

  byId("device-key-done").addEventListener("click", () => {
    forgetKey();
    (selected() ? nameHeading : byId("register-device-title")).focus();
  });

  // ---- Keeping up ----

  store.addEventListener("devices", (event) => {
    renderList();
    const id = event.detail.deviceId;
    if (id === null || id === selectedId) {
      renderDetail();
      if (id === null) renderChannels();
      // Online now, or a heartbeat: telemetry may have started since the list was empty.
      if (id && metricSelect.disabled && isOpen()) loadMetrics();
    }
  });
  store.addEventListener("channels", () => {
    if (isOpen()) renderChannels();
  });
  store.addEventListener("reset", () => {
    selectedId = null;
    metricsOf = null;
    shown = null;
    confirmingRevoke = null;
    announced.clear();
    chart.replaceChildren();
    latest.textContent = "";
    commandLog.replaceChildren();
    forgetKey();
    view.hidden = true;
    conversation.hidden = false;
    openButton.setAttribute("aria-current", "false");
    clearInterval(refreshTimer);
    renderList();
    renderDetail();
  });

  openButton.addEventListener("click", () => open());
  byId("devices-close").addEventListener("click", () => close());
  view.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.defaultPrevented && !event.target.closest("input, textarea, select")) close();
  });

  return { open, close, reload, isOpen };
}
