// Files attached to messages: download buttons, and inline previews of images.
//
// A file is fetched with the Authorization header (api.download) and shown or saved from
// a blob: URL, so the access token never goes into a URL. Blob URLs are cached per file id
// (a file's bytes never change) and released at sign-out.

import { h } from "../dom.js";

/** Types shown inline (the server serves them as themselves, docs/api.md). */
const PREVIEWED = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
/** Larger images are only offered for download. */
const PREVIEW_MAX_BYTES = 10 * 1024 * 1024;

export function setupAttachments(api) {
  const urls = new Map(); // file id → Promise<blob: URL>

  function blobUrl(file) {
    if (!urls.has(file.id)) {
      const url = api.download(file.id).then((blob) => URL.createObjectURL(blob));
      url.catch(() => urls.delete(file.id)); // a later click tries again
      urls.set(file.id, url);
    }
    return urls.get(file.id);
  }

  async function save(file, status) {
    status.textContent = "";
    try {
      const a = h("a", { href: await blobUrl(file), download: file.name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) {
      status.textContent = `Download failed: ${err.message}`;
    }
  }

  /** The list of a message's attachments (FileInfo objects). */
  function list(files) {
    return h("ul", { class: "attachments", "aria-label": "Attachments" }, ...files.map((file) => {
      const status = h("span", { class: "error", role: "alert" });
      const image = PREVIEWED.has(file.content_type) && file.size <= PREVIEW_MAX_BYTES
        ? h("img", { class: "preview", alt: file.name, width: 240, height: 160, dataset: { fileId: file.id } })
        : null;
      if (image) {
        blobUrl(file).then((url) => {
          image.src = url;
          image.removeAttribute("width");
          image.removeAttribute("height");
        }, () => image.replaceWith(h("span", { class: "hint" }, "(preview unavailable)")));
      }
      return h("li", { class: "attachment", dataset: { fileId: file.id } },
        image,
        h("button", {
          type: "button",
          class: "link download",
          dataset: { focus: `download-${file.id}` },
          onclick: () => save(file, status),
        }, `${file.name} (${formatSize(file.size)})`),
        status);
    }));
  }

  function release() {
    for (const url of urls.values()) url.then((u) => URL.revokeObjectURL(u), () => {});
    urls.clear();
  }

  return { list, release };
}

/** 1234567 → "1.2 MB". */
export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}
