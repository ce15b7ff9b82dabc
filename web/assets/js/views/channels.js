// The sidebar: channels and direct conversations with unread and mention badges (and
// presence dots for the people in a conversation), creating a channel, and opening a
// direct conversation by username.

import { byId, busy, h } from "../dom.js";
import { presenceDot } from "./members.js";

export function setupChannels({ store, api, onOpen, onCreated }) {
  const list = byId("channel-list");
  const dmList = byId("dm-list");
  const empty = byId("channel-list-empty");
  const sidebar = byId("sidebar");
  const toggle = byId("menu-toggle");

  function entry(c) {
    const name = store.channelName(c);
    const kind = c.direct ? "Direct message with" : c.private ? "Private channel" : "Channel";
    const label = `${kind} ${name}` +
      (c.unread ? `, ${c.unread} unread` : "") +
      (c.mentions ? `, ${c.mentions} ${c.mentions === 1 ? "mention" : "mentions"}` : "") +
      (c.archived ? ", archived" : "");
    const partners = c.direct ? store.dmPartners(c) ?? [] : [];
    // One dot for a 1:1 conversation; a group shows "online" when anyone in it is.
    const status = partners.length === 0 ? null
      : partners.map((id) => store.presence.get(id) ?? "offline")
        .reduce((best, s) => (rank(s) > rank(best) ? s : best), "offline");
    return h("li", {},
      h("button", {
        type: "button",
        "aria-current": c.id === store.activeId ? "true" : "false",
        "aria-label": label,
        dataset: { channelId: c.id, channelName: c.direct ? name : c.name },
        onclick: () => {
          setDrawer(false);
          onOpen(c.id);
        },
      },
      status ? presenceDot(status) : null,
      h("span", { class: "name" }, c.private || c.direct ? "" : "# ", name),
      c.private && !c.direct ? h("span", { class: "tag", "aria-hidden": "true" }, "private") : null,
      c.archived ? h("span", { class: "tag", "aria-hidden": "true" }, "archived") : null,
      c.mentions ? h("span", { class: "mention-badge", "aria-hidden": "true" }, `@${c.mentions > 99 ? "99+" : c.mentions}`) : null,
      c.unread ? h("span", { class: "badge", "aria-hidden": "true" }, c.unread > 99 ? "99+" : c.unread) : null));
  }

  function render() {
    const channels = store.sortedChannels();
    const rooms = channels.filter((c) => !c.direct);
    empty.hidden = rooms.length > 0;
    const focused = sidebar.contains(document.activeElement) ? document.activeElement.dataset.channelId : null;
    list.replaceChildren(...rooms.map(entry));
    dmList.replaceChildren(...channels.filter((c) => c.direct).map(entry));
    if (focused) sidebar.querySelector(`button[data-channel-id="${CSS.escape(focused)}"]`)?.focus();
  }
  store.addEventListener("channels", render);
  store.addEventListener("people", render);

  // Arrow keys move between conversations; Enter/Space open (buttons do that by themselves).
  sidebar.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const buttons = [...sidebar.querySelectorAll(".channel-list button")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    event.preventDefault();
    buttons[(at + (event.key === "ArrowDown" ? 1 : buttons.length - 1)) % buttons.length]?.focus();
  });

  function setDrawer(open) {
    sidebar.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", String(open));
    if (open) sidebar.querySelector(".channel-list button")?.focus();
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
        setDrawer(false);
        await onCreated(id);
      } catch (err) {
        error.textContent = err.message;
      }
    });
  });

  const dmForm = byId("new-dm-form");
  const dmError = byId("new-dm-error");
  dmForm.addEventListener("submit", (event) => {
    event.preventDefault();
    dmError.textContent = "";
    const username = byId("new-dm-username").value.trim();
    if (!username) return;
    busy(dmForm, async () => {
      try {
        const user = await api.userByName(username);
        const { id } = await api.openDirect([user.user_id]);
        byId("new-dm-username").value = "";
        setDrawer(false);
        await onCreated(id);
      } catch (err) {
        dmError.textContent = err.status === 404 ? `There is no user “${username}”.` : err.message;
      }
    });
  });

  return { render, setDrawer };
}

function rank(status) {
  return { offline: 0, away: 1, online: 2 }[status] ?? 0;
}

export function showIdentity(me) {
  byId("my-username").textContent = me.username;
}
