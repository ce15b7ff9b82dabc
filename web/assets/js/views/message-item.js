// One message as a list item, in the timeline or the thread panel: who and when, "(edited)",
// the body (or "message deleted"), attachments, reactions, "N replies", and its actions
// (react, reply in thread, edit and delete for its author; delete for the channel's owners).
//
// Items are redrawn whole when their message changes; `swap` puts the new one in place and
// gives focus back to the control that had it, so keyboard users keep their place.

import { h, timeEl } from "../dom.js";

/** The reaction picker: a few common emoji. */
export const EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "👀"];

/**
 * What a sender element holds: the name, and a "device" marker when a device sent it (its
 * events in a linked channel). Used again when names become known (`refreshSender`).
 */
function senderParts(store, id) {
  const name = store.userName(id);
  if (store.isDevice(id)) return [name, h("span", { class: "tag device-tag" }, "device")];
  return [name];
}

/** A sender element: `<span class="sender" data-user>` with the name (and device marker). */
export function senderEl(store, id) {
  const el = h("span", { class: "sender", dataset: { user: id } });
  refreshSender(store, el);
  return el;
}

/** Draws a sender element again with what is known now. */
export function refreshSender(store, el) {
  const id = el.dataset.user;
  el.replaceChildren(...senderParts(store, id));
  el.classList.toggle("device", store.isDevice(id));
  // The id of a sender that cannot be named, for whoever needs to tell them apart.
  if (store.unknownSenders.has(id)) el.title = id;
  else el.removeAttribute("title");
}

export function setupMessageItems({ store, api, attachments, onOpenThread }) {
  let editing = null; // {id, draft, error}
  let confirming = null; // id of the message whose deletion awaits confirmation
  let focusNext = null; // {id, where, key}: the control to focus when that item is redrawn

  function redraw(m, key, where) {
    focusNext = key ? { id: m.id, where, key } : null;
    store.touch(m.channel, m.seq);
  }

  function nameEl(userId) {
    return senderEl(store, userId);
  }

  function item(m, { inThread = false } = {}) {
    const where = inThread ? "thread" : "timeline";
    const mine = store.me && m.sender === store.me.user_id;
    const channel = store.channels.get(m.channel);
    const classes = ["message"];
    if (mine) classes.push("mine");
    if (m.deleted) classes.push("deleted");
    if (m.thread_root) classes.push("reply");
    const li = h("li", { class: classes.join(" "), dataset: { seq: m.seq, id: m.id, where } });

    li.append(h("div", { class: "meta" },
      nameEl(m.sender),
      timeEl(m.ts),
      m.edited_at && !m.deleted ? h("span", { class: "edited", title: `edited ${new Date(m.edited_at).toLocaleString()}` }, "(edited)") : null,
      // The automatic moderation's flag (docs/ml.md), with its reasons.
      m.flagged?.length && !m.deleted
        ? h("span", { class: "flagged", title: `flagged by the automatic check: ${m.flagged.join(", ")}` }, `flagged: ${m.flagged.join(", ")}`)
        : null));

    if (m.deleted) {
      li.append(h("p", { class: "body tombstone" }, "message deleted"));
    } else if (editing?.id === m.id) {
      li.append(editForm(m, where));
    } else if (m.body) {
      li.append(h("p", { class: "body" }, m.body));
    }
    if (!m.deleted && m.attachments?.length) li.append(attachments.list(m.attachments));
    if (!m.deleted && m.reactions?.length) li.append(reactionBar(m, channel));
    if (!inThread && !m.thread_root && m.reply_count > 0) {
      const label = m.reply_count === 1 ? "1 reply" : `${m.reply_count} replies`;
      li.append(h("button", {
        type: "button",
        class: "link replies",
        dataset: { focus: "replies" },
        onclick: () => onOpenThread(m),
      }, label));
    }
    if (!m.deleted && channel && !channel.archived) li.append(actions(m, channel, { mine, inThread, where }));
    return li;
  }

  function reactionBar(m, channel) {
    const me = store.me?.user_id;
    return h("div", { class: "reactions", role: "group", "aria-label": "Reactions" },
      ...m.reactions.map((r) => {
        const reacted = r.users.includes(me);
        const names = r.users.map((u) => store.userName(u)).join(", ");
        return h("button", {
          type: "button",
          class: "reaction",
          "aria-pressed": String(reacted),
          "aria-label": `${r.emoji} ${r.users.length}, by ${names}`,
          title: names,
          disabled: channel?.archived,
          dataset: { emoji: r.emoji, focus: `reaction-${r.emoji}` },
          onclick: () => react(m, r.emoji, !reacted),
        }, `${r.emoji} ${r.users.length}`);
      }));
  }

  function actions(m, channel, { mine, inThread, where }) {
    const moderator = channel.role === "owner" || channel.role === "admin";
    const picker = h("div", { class: "picker", role: "group", "aria-label": "Pick a reaction", hidden: true },
      ...EMOJI.map((emoji) => h("button", {
        type: "button",
        class: "emoji",
        "aria-label": `React with ${emoji}`,
        dataset: { emoji },
        onclick: () => {
          closePicker();
          const own = m.reactions?.find((r) => r.emoji === emoji)?.users.includes(store.me?.user_id);
          react(m, emoji, !own);
        },
      }, emoji)));
    const toggle = h("button", {
      type: "button",
      class: "secondary small",
      "aria-expanded": "false",
      dataset: { focus: "react" },
      onclick: () => (picker.hidden ? openPicker() : closePicker()),
    }, "React");
    function openPicker() {
      picker.hidden = false;
      toggle.setAttribute("aria-expanded", "true");
      picker.querySelector("button")?.focus();
    }
    function closePicker() {
      picker.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    }
    picker.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        closePicker();
      }
    });

    const buttons = [toggle];
    if (!inThread && !m.thread_root) {
      buttons.push(h("button", {
        type: "button", class: "secondary small", dataset: { focus: "reply" },
        onclick: () => onOpenThread(m, { reply: true }),
      }, "Reply"));
    }
    if (mine) {
      buttons.push(h("button", {
        type: "button", class: "secondary small", dataset: { focus: "edit" },
        onclick: () => {
          editing = { id: m.id, draft: m.body, error: "" };
          redraw(m, "edit-input", where);
        },
      }, "Edit"));
    }
    if (mine || moderator) {
      if (confirming === m.id) {
        buttons.push(
          h("button", {
            type: "button", class: "danger small", dataset: { focus: "delete-confirm" },
            onclick: () => remove(m, where),
          }, "Delete for everyone"),
          h("button", {
            type: "button", class: "secondary small", dataset: { focus: "delete-cancel" },
            onclick: () => {
              confirming = null;
              redraw(m, "delete", where);
            },
          }, "Keep"));
      } else {
        buttons.push(h("button", {
          type: "button", class: "secondary small", dataset: { focus: "delete" },
          onclick: () => {
            confirming = m.id;
            redraw(m, "delete-confirm", where);
          },
        }, "Delete"));
      }
    }
    const who = mine ? "your message" : `the message from ${store.userName(m.sender)}`;
    return h("div", { class: "message-actions" },
      h("div", { class: "actions", role: "group", "aria-label": `Actions for ${who}` }, ...buttons),
      picker);
  }

  function editForm(m, where) {
    const id = `edit-${where}-${m.id}`;
    const input = h("textarea", { id, rows: 2, maxlength: 32768, dataset: { focus: "edit-input" } });
    input.value = editing.draft;
    input.addEventListener("input", () => {
      editing.draft = input.value;
    });
    const cancel = () => {
      editing = null;
      redraw(m, "edit", where);
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        cancel();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    const form = h("form", {
      class: "edit",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = editing.draft;
        if (!body.trim() && !m.attachments?.length) return;
        try {
          const edited = await api.editMessage(m.channel, m.id, body);
          editing = null;
          focusNext = { id: m.id, where, key: "edit" };
          store.addMessages(m.channel, [edited], { live: true });
        } catch (err) {
          editing.error = err.message;
          redraw(m, "edit-input", where);
        }
      },
    },
    h("label", { for: id, class: "visually-hidden" }, "Edit message"),
    input,
    editing.error ? h("p", { class: "error", role: "alert" }, editing.error) : null,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "small" }, "Save"),
      h("button", { type: "button", class: "secondary small", onclick: cancel }, "Cancel")));
    return form;
  }

  async function react(m, emoji, on) {
    try {
      await api.react(m.channel, m.id, emoji, on);
    } catch {
      // The reaction bar shows the server's state, which did not change.
    }
  }

  async function remove(m, where) {
    confirming = null;
    try {
      await api.deleteMessage(m.channel, m.id);
      focusNext = { id: m.id, where, key: "none" };
    } catch {
      redraw(m, "delete", where);
    }
  }

  /** A message being sent: uploading, sending, held for review by an administrator (it
   * appears when released), or refused (then it can be dismissed). */
  function pendingItem(p) {
    const status = {
      uploading: "uploading…",
      sending: "sending…",
      held: "held for review: an administrator will release it or not",
      failed: `not sent: ${p.failed}`,
    }[p.state];
    const settled = p.state === "failed" || p.state === "held";
    return h("li", { class: `message mine ${settled ? p.state : "pending"}`, dataset: { pending: p.clientMsgId } },
      h("div", { class: "meta" },
        h("span", { class: "sender" }, store.me?.username ?? "you"),
        h("span", { role: p.state === "held" ? "status" : null }, status),
        settled
          ? h("button", { type: "button", class: "link", onclick: () => store.dropPending(p.clientMsgId) }, "Dismiss")
          : null),
      p.body ? h("p", { class: "body" }, p.body) : null,
      p.files.length ? h("ul", { class: "attachments" }, ...p.files.map((f) => h("li", {}, f.name))) : null);
  }

  /** Replaces an item with its redrawn self, keeping keyboard focus where it was. */
  function swap(old, next) {
    const had = old.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
    const scroller = old.closest(".message-scroll");
    old.replaceWith(next);
    let key = had;
    if (focusNext && focusNext.id === next.dataset.id && focusNext.where === next.dataset.where) {
      key = focusNext.key;
      focusNext = null;
    }
    if (!key) return;
    const target = next.querySelector(`[data-focus="${CSS.escape(key)}"]`);
    if (target) target.focus();
    else if (had || key === "none") scroller?.focus();
  }

  /** Updates the names shown under `root` once they are known. */
  function refreshNames(root) {
    for (const el of root.querySelectorAll(".sender[data-user]")) refreshSender(store, el);
  }

  return { item, pendingItem, swap, refreshNames };
}
