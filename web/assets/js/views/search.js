// Search: results replace the conversation until closed; picking one opens its channel
// (and its thread, for a reply) and highlights the message.

import { byId, h, timeEl } from "../dom.js";
import { refreshSender, senderEl } from "./message-item.js";

export function setupSearch({ store, api, onPick, onShow = () => {} }) {
  const form = byId("search-form");
  const input = byId("search-input");
  const view = byId("search-view");
  const conversation = byId("conversation");
  const results = byId("search-results");
  const status = byId("search-status");

  function show(visible) {
    if (visible) onShow();
    view.hidden = !visible;
    conversation.hidden = visible;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const q = input.value.trim();
    if (!q) return;
    show(true);
    results.replaceChildren();
    status.textContent = "Searching…";
    try {
      const found = await api.search(q);
      status.textContent = found.length === 1 ? "1 message found." : `${found.length} messages found.`;
      results.replaceChildren(...found.map((m) => {
        const channel = store.channels.get(m.channel);
        const where = !channel ? "a channel" : channel.direct ? store.channelName(channel) : `#${channel.name}`;
        return h("li", {},
          h("button", { type: "button", dataset: { channel: m.channel, seq: m.seq }, onclick: () => pick(m) },
            h("span", { class: "meta" },
              `${where}${m.thread_root ? " (thread)" : ""} · `,
              senderEl(store, m.sender),
              " · ", timeEl(m.ts)),
            h("span", { class: "body" }, m.body)));
      }));
      results.querySelector("button")?.focus();
    } catch (err) {
      status.textContent = `Search failed: ${err.message}`;
    }
  });

  async function pick(m) {
    show(false);
    await onPick(m);
  }

  store.addEventListener("people", () => {
    for (const el of results.querySelectorAll(".sender[data-user]")) refreshSender(store, el);
  });

  byId("search-close").addEventListener("click", () => {
    show(false);
    input.focus();
  });
  view.addEventListener("keydown", (event) => {
    if (event.key === "Escape") byId("search-close").click();
  });

  return { close: () => show(false) };
}
