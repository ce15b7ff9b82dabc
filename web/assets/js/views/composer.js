// A message composer (the channel's, and the thread panel's): Enter sends, Shift+Enter is a
// new line, typing notices go out while typing, and chosen files are uploaded before the
// message that carries them is published.

import { byId, h } from "../dom.js";
import { formatSize } from "./attachments.js";

/** At most one `typing` frame per channel this often (docs/protocol.md). */
const TYPING_EVERY_MS = 3_000;
/** A message carries at most this many files. */
const MAX_FILES = 10;

/**
 * `form`, `input`, `fileInput`, `fileList`, `error`: the composer's elements (composerParts).
 * `target()`: where it posts now, `{channelId, threadRoot}` (threadRoot null: the timeline).
 */
export function setupComposer({ store, api, socket, form, input, fileInput, fileList, error, target }) {
  let files = [];
  let typingSentAt = 0;
  let typingChannel = null;

  function renderFiles() {
    fileList.replaceChildren(...files.map((file, i) => h("li", {},
      h("span", {}, `${file.name} (${formatSize(file.size)})`),
      h("button", {
        type: "button",
        class: "link",
        "aria-label": `Remove ${file.name}`,
        onclick: () => {
          files.splice(i, 1);
          renderFiles();
          input.focus();
        },
      }, "Remove"))));
  }

  fileInput.addEventListener("change", () => {
    error.textContent = "";
    files.push(...fileInput.files);
    if (files.length > MAX_FILES) {
      files = files.slice(0, MAX_FILES);
      error.textContent = `A message carries at most ${MAX_FILES} files.`;
    }
    fileInput.value = "";
    renderFiles();
    input.focus();
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, 160)}px`;
    const to = target();
    if (!to || !input.value.trim()) return;
    const now = Date.now();
    if (typingChannel !== to.channelId || now - typingSentAt >= TYPING_EVERY_MS) {
      typingChannel = to.channelId;
      typingSentAt = now;
      socket.typing(to.channelId);
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const to = target();
    const body = input.value;
    if (!to || (!body.trim() && files.length === 0)) return;
    error.textContent = "";
    send(to, body, files);
    files = [];
    renderFiles();
    input.value = "";
    input.style.height = "auto";
    typingSentAt = 0;
    input.focus();
  });

  async function send({ channelId, threadRoot }, body, chosen) {
    const clientMsgId = crypto.randomUUID();
    store.addPending(channelId, { body, clientMsgId, threadRoot, files: chosen });
    const attachments = [];
    for (const file of chosen) {
      try {
        attachments.push(await api.uploadFile(channelId, file));
      } catch (err) {
        store.failPending(clientMsgId, `${file.name}: ${err.message}`);
        return;
      }
    }
    if (!store.pending.has(clientMsgId)) return; // dismissed, or the channel is gone
    store.updatePending(clientMsgId, { attachments, state: "sending" });
    socket.publish(channelId, body, clientMsgId, { threadRoot, attachments: attachments.map((f) => f.id) });
  }

  const drafts = new Map(); // channel or thread → unsent text
  let draftKey = null;
  store.addEventListener("reset", () => {
    drafts.clear();
    draftKey = null;
    files = [];
    renderFiles();
    input.value = "";
  });

  return {
    /** Switches to another channel or thread: its own unsent text comes back; files do not. */
    switchTo(key) {
      if (draftKey !== null) {
        if (input.value) drafts.set(draftKey, input.value);
        else drafts.delete(draftKey);
      }
      draftKey = key;
      files = [];
      renderFiles();
      input.value = drafts.get(key) ?? "";
      input.style.height = "auto";
      error.textContent = "";
    },
    setDisabled(disabled) {
      for (const el of form.elements) el.disabled = disabled;
    },
  };
}

/** A composer's elements, by id. */
export function composerParts(formId, inputId, fileId, filesId, errorId) {
  return {
    form: byId(formId),
    input: byId(inputId),
    fileInput: byId(fileId),
    fileList: byId(filesId),
    error: byId(errorId),
  };
}
