// Small DOM helpers: elements are built with h(), never from HTML strings, so text that
// users wrote (titles, names, chat) can never become markup.

/**
 * Create an element. `attrs`: `class`, `text`, `dataset` (object), `on` (object of event
 * handlers), `style` (object), booleans (`hidden`, `disabled`…) and any other attribute.
 * Children may be nodes, strings, numbers, arrays of those, or null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key === "on") for (const [name, fn] of Object.entries(value)) el.addEventListener(name, fn);
    else if (typeof value === "boolean" && key in el) {
      el[key] = value; // the property: a `muted` attribute alone does not mute
      el.setAttribute(key, "");
    } else if (value === true) el.setAttribute(key, "");
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace every child of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A short message in the polite live region at the bottom of the page. */
export function toast(message, kind = "info", ms = 5000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = h("div", { class: ["toast", `toast-${kind}`], role: kind === "error" ? "alert" : null }, message);
  box.append(item);
  setTimeout(() => item.remove(), ms);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

export function formatDateTime(iso) {
  return iso ? dateTime.format(new Date(iso)) : "";
}

export function formatTime(iso) {
  return iso ? timeOnly.format(new Date(iso)) : "";
}

/** A labelled form field: label, control, hint and an error slot wired with aria. */
export function field(labelText, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  const errorEl = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  const described = [hintEl && hintEl.id, errorEl.id].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", described);
  const wrap = h("div", { class: "field" }, h("label", { for: id }, labelText), control, hintEl, errorEl);
  wrap.showError = (message) => {
    errorEl.textContent = message || "";
    errorEl.hidden = !message;
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  };
  return wrap;
}

/** Show an API error on a form: field details next to their fields, the rest on top. */
export function showFormError(form, fields, err) {
  const summary = form.querySelector(".form-error");
  for (const f of Object.values(fields)) f.showError(null);
  const details = (err && err.details) || {};
  let placed = false;
  for (const [name, message] of Object.entries(details)) {
    if (fields[name]) {
      fields[name].showError(String(message));
      placed = true;
    }
  }
  if (summary) {
    summary.textContent = err ? err.message || "Something went wrong" : "";
    summary.hidden = !err;
  }
  const first = form.querySelector("[aria-invalid=true]") || (placed ? null : summary);
  if (first) first.focus?.();
}

export function initials(name) {
  const parts = String(name || "?")
    .trim()
    .split(/[\s._-]+/)
    .filter(Boolean);
  return (parts[0]?.[0] || "?").toUpperCase() + (parts[1]?.[0] || "").toUpperCase();
}
