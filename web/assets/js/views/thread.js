// The thread panel: a root message, its replies (oldest first) and a composer that posts
// into the thread. Replies are channel messages like any other, held in the store by seq;
// the panel shows those whose thread_root is its root.

import { byId } from "../dom.js";
import { setupComposer, composerParts } from "./composer.js";

export function setupThread({ store, api, socket, items }) {
  const panel = byId("thread-panel");
  const scroller = byId("thread-scroll");
  const list = byId("thread-list");
  const status = byId("thread-status");
  let current = null; // {channelId, rootId}
  let opener = null; // the control that opened the panel, focused again on close
  let rendered = new Map(); // seq → <li>

  const composer = setupComposer({
    store, api, socket,
    ...composerParts("thread-composer", "thread-input", "thread-file", "thread-files", "thread-error"),
    target: () => (current ? { channelId: current.channelId, threadRoot: current.rootId } : null),
  });

  function messages() {
    const root = store.messageById(current.channelId, current.rootId);
    return root ? [root, ...store.repliesTo(current.channelId, current.rootId)] : [];
  }

  function sync(changed = []) {
    if (!current) return;
    const stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
    for (const seq of changed) {
      const old = rendered.get(seq);
      const m = store.channels.get(current.channelId)?.messages.get(seq);
      if (old && m) {
        const next = items.item(m, { inThread: true });
        rendered.set(seq, next);
        items.swap(old, next);
      }
    }
    let next = null;
    const shown = messages();
    for (let i = shown.length - 1; i >= 0; i -= 1) {
      let li = rendered.get(shown[i].seq);
      if (!li) {
        li = items.item(shown[i], { inThread: true });
        rendered.set(shown[i].seq, li);
        list.insertBefore(li, next ?? list.querySelector("li[data-pending]"));
      }
      next = li;
    }
    for (const li of list.querySelectorAll("li[data-pending]")) li.remove();
    for (const p of store.pendingIn(current.channelId, current.rootId)) list.append(items.pendingItem(p));
    const count = shown.length - 1;
    if (shown.length) status.textContent = count > 0 ? "" : "No replies yet.";
    if (stick) scroller.scrollTop = scroller.scrollHeight;
  }

  /** Opens the thread of `root` (a message of the channel); `reply`: focus the composer. */
  async function open(root, { reply = false, highlight = null } = {}) {
    opener = document.activeElement;
    const changing = current?.rootId !== root.id;
    current = { channelId: root.channel, rootId: root.id };
    panel.hidden = false;
    document.body.classList.add("thread-open");
    if (changing) {
      rendered = new Map();
      list.replaceChildren();
      composer.switchTo(root.id);
    }
    composer.setDisabled(Boolean(store.channels.get(root.channel)?.archived));
    status.textContent = "Loading…";
    sync();
    (reply ? byId("thread-input") : scroller).focus();
    try {
      let after;
      for (let page = 0; page < 20; page += 1) {
        const thread = await api.thread(root.channel, root.id, { after });
        if (current?.rootId !== root.id) return;
        store.addMessages(root.channel, [thread.root, ...thread.replies]);
        if (!thread.has_more || thread.replies.length === 0) break;
        after = thread.replies.at(-1).seq;
      }
      sync();
      if (current?.rootId !== root.id) return;
      status.textContent = store.repliesTo(root.channel, root.id).length ? "" : "No replies yet.";
      if (highlight !== null) {
        const li = rendered.get(highlight);
        li?.classList.add("highlight");
        li?.scrollIntoView({ block: "center" });
        setTimeout(() => li?.classList.remove("highlight"), 3000);
      }
    } catch (err) {
      status.textContent = `Could not load the thread: ${err.message}`;
    }
  }

  /** Closes the panel; focus goes back to what opened it unless `restoreFocus` is false. */
  function close({ restoreFocus = true } = {}) {
    if (!current) return;
    current = null;
    rendered = new Map();
    list.replaceChildren();
    panel.hidden = true;
    document.body.classList.remove("thread-open");
    if (restoreFocus && opener?.isConnected) opener.focus();
    else if (restoreFocus) byId("composer-input").focus();
    opener = null;
  }

  byId("thread-close").addEventListener("click", () => close());
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.defaultPrevented) close();
  });

  store.addEventListener("messages", (event) => {
    if (current && event.detail.channelId === current.channelId) sync(event.detail.changed);
  });
  store.addEventListener("people", () => items.refreshNames(list));
  store.addEventListener("active", () => {
    if (current && store.activeId !== current.channelId) close({ restoreFocus: false });
  });

  return { open, close, get rootId() { return current?.rootId ?? null; } };
}
