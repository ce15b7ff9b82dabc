// The channel list (with unread badges), creating a channel, and "your user id".

import { byId, busy, h } from "../dom.js";

export function setupChannels({ store, api, onOpen, onCreated }) {
  const list = byId("channel-list");
  const empty = byId("channel-list-empty");
  const sidebar = byId("sidebar");
  const toggle = byId("menu-toggle");

  function render() {
    const channels = store.sortedChannels();
    empty.hidden = channels.length > 0;
    list.replaceChildren(
      ...channels.map((c) => {
        const label = `${c.private ? "Private channel" : "Channel"} ${c.name}` +
          (c.unread ? `, ${c.unread} unread` : "");
        return h("li", {},
          h("button", {
            type: "button",
            "aria-current": c.id === store.activeId ? "true" : "false",
            "aria-label": label,
            dataset: { channelId: c.id, channelName: c.name },
            onclick: () => {
              setDrawer(false);
              onOpen(c.id);
            },
          },
          h("span", { class: "name" }, c.private ? "" : "# ", c.name),
          c.private ? h("span", { class: "tag", "aria-hidden": "true" }, "private") : null,
          c.unread ? h("span", { class: "badge", "aria-hidden": "true" }, c.unread > 99 ? "99+" : c.unread) : null));
      }),
    );
  }
  store.addEventListener("channels", render);

  // Arrow keys move between channels; Enter/Space open (buttons do that by themselves).
  list.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const buttons = [...list.querySelectorAll("button")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    event.preventDefault();
    const next = buttons[(at + (event.key === "ArrowDown" ? 1 : buttons.length - 1)) % buttons.length];
    next?.focus();
  });

  function setDrawer(open) {
    sidebar.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", String(open));
    if (open) list.querySelector("button")?.focus();
  }
  toggle.addEventListener("click", () => setDrawer(!sidebar.classList.contains("open")));
  sidebar.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && sidebar.classList.contains("open")) {
      setDrawer(false);
      toggle.focus();
    }
  });

  const form = byId("new-channel-form");
  const error = byId("new-channel-error");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.textContent = "";
    const name = byId("new-channel-name").value.trim();
    if (!name) {
      error.textContent = "Give the channel a name.";
      return;
    }
    busy(form, async () => {
      try {
        const { id } = await api.createChannel(name, byId("new-channel-private").checked);
        byId("new-channel-name").value = "";
        byId("new-channel-private").checked = false;
        await onCreated(id);
      } catch (err) {
        error.textContent = err.message;
      }
    });
  });

  return { render, setDrawer };
}

export function showIdentity(me) {
  byId("my-username").textContent = me.username;
  byId("my-user-id").value = me.user_id;
}
