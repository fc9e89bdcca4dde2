// History-API routing: paths like /meetings/<id>/join are real URLs (the api answers
// index.html for them), links are intercepted, and each view may return a cleanup.

import { api } from "./api.js";

const routes = [];
let current = null; // { destroy } of the view on screen
let rendering = 0;

/** Register a view for a path pattern such as "/meetings/:id/join". */
export function route(pattern, view, { auth = true, title = "" } = {}) {
  const names = [];
  const regex = new RegExp(
    "^" +
      pattern.replace(/\/:([a-z_]+)/gi, (_, name) => {
        names.push(name);
        return "/([^/]+)";
      }) +
      "/?$",
  );
  routes.push({ regex, names, view, auth, title });
}

export function navigate(path, { replace = false, state = null } = {}) {
  if (replace) history.replaceState(state, "", path);
  else history.pushState(state, "", path);
  render();
}

function match(pathname) {
  for (const r of routes) {
    const m = r.regex.exec(pathname);
    if (m) {
      const params = {};
      r.names.forEach((name, i) => (params[name] = decodeURIComponent(m[i + 1])));
      return { route: r, params };
    }
  }
  return null;
}

export async function render() {
  const ticket = ++rendering;
  const main = document.getElementById("main");
  const { pathname, search } = location;
  const found = match(pathname) || match("/404");
  if (found.route.auth && !api.signedIn) {
    navigate(`/signin?next=${encodeURIComponent(pathname + search)}`, { replace: true });
    return;
  }
  if (current && current.destroy) {
    try {
      current.destroy();
    } catch (e) {
      console.error(e);
    }
  }
  current = null;
  main.replaceChildren();
  document.title = found.route.title ? `${found.route.title} · Konfer` : "Konfer";
  const query = Object.fromEntries(new URLSearchParams(search));
  try {
    const result = await found.route.view(main, found.params, query, history.state);
    if (ticket !== rendering) {
      result?.destroy?.();
      return;
    }
    current = result || null;
  } catch (err) {
    console.error(err);
    if (ticket === rendering) {
      main.replaceChildren();
      const p = document.createElement("p");
      p.className = "form-error";
      p.textContent = err.message || "Something went wrong";
      main.append(p);
    }
  }
  if (ticket === rendering) {
    // Move focus to the new page's heading so keyboard and screen-reader users start there.
    const heading = main.querySelector("h1");
    const moved = main.contains(document.activeElement) && document.activeElement !== main;
    if (heading && !moved) {
      // …unless they already moved on inside the page while it was loading.
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: true });
    }
  }
}

export function start() {
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a[href]");
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (a.target || a.hasAttribute("download") || a.origin !== location.origin) return;
    if (a.pathname.startsWith("/api/") || a.pathname.startsWith("/docs")) return;
    if (a.hash && a.pathname === location.pathname) return; // in-page link (skip link)
    e.preventDefault();
    navigate(a.pathname + a.search);
  });
  window.addEventListener("popstate", () => render());
  render();
}
