// The active channel's members, with presence dots, and adding someone by username.
// Direct conversations have fixed members: the list shows, the form does not.

import { byId, busy, h } from "../dom.js";

/** A presence dot with its meaning for screen readers. */
export function presenceDot(status = "offline") {
  return h("span", { class: "presence", dataset: { status }, role: "img", "aria-label": status, title: status });
}

export function setupMembers({ store, api }) {
  const panel = byId("members-panel");
  const summary = byId("members-summary");
  const list = byId("member-list");
  const form = byId("add-member-form");
  const input = byId("add-member-name");
  const result = byId("add-member-result");
  let shownId = null;

  function render() {
    const channel = store.active;
    panel.hidden = !channel;
    if (!channel) return;
    form.hidden = channel.direct || channel.archived;
    const members = channel.members ? [...channel.members.values()] : [];
    summary.textContent = channel.members ? `Members (${members.length})` : "Members";
    members.sort((a, b) => store.userName(a.user_id).localeCompare(store.userName(b.user_id)));
    list.replaceChildren(...members.map((m) => h("li", { dataset: { userId: m.user_id } },
      presenceDot(store.presence.get(m.user_id)),
      h("span", { class: "member-name" }, store.userName(m.user_id)),
      m.role !== "member" ? h("span", { class: "tag" }, m.role) : null)));
  }

  /** Loads the active channel's members (names, roles, presence, read positions). */
  function load() {
    const channel = store.active;
    if (!channel) return Promise.resolve();
    const id = channel.id;
    return api.members(id)
      .then((members) => store.setMembers(id, members))
      .catch(() => {}); // the list stays as it was; the next change loads it again
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const channel = store.active;
    const username = input.value.trim();
    if (!channel || !username) return;
    result.textContent = "";
    busy(form, async () => {
      try {
        const user = await api.userByName(username);
        await api.addMember(channel.id, user.user_id);
        input.value = "";
        result.classList.remove("error");
        result.textContent = `Added ${user.username}.`;
      } catch (err) {
        result.classList.add("error");
        result.textContent = err.status === 404 ? `There is no user “${username}”.` : err.message;
      }
    });
  });

  store.addEventListener("active", () => {
    if (store.activeId !== shownId) {
      shownId = store.activeId;
      panel.open = false;
      result.textContent = "";
      if (store.active) load();
    }
    render();
  });
  store.addEventListener("members", (event) => {
    if (event.detail.channelId === store.activeId) render();
  });
  store.addEventListener("people", render);
  store.addEventListener("channels", render);

  return { load };
}
