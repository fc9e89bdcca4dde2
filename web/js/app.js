// Entry point: the top bar and the routes. Everything else lives in views/ and rtc/.
// Plain ES modules, no build step; formatted with Prettier 3 (--print-width 120).

import { api } from "./api.js";
import { h, mount } from "./dom.js";
import { navigate, route, start } from "./router.js";
import { signInView, signUpView } from "./views/auth.js";
import { meetingsView, meetingView } from "./views/meetings.js";
import { meetingFormView } from "./views/meeting-form.js";
import { prejoinView } from "./views/prejoin.js";
import { roomView } from "./views/room.js";

function renderNav() {
  const nav = document.getElementById("nav");
  if (!api.signedIn) {
    mount(nav, h("a", { href: "/signin" }, "Sign in"), h("a", { href: "/signup", class: "button small" }, "Sign up"));
    return;
  }
  const user = api.user;
  mount(
    nav,
    h("a", { href: "/" }, "Meetings"),
    h("a", { href: "/meetings/new" }, "New meeting"),
    h("span", { class: "whoami", title: user ? user.email || "" : "" }, user ? user.nickname || user.username : ""),
    h(
      "button",
      {
        type: "button",
        class: "link",
        on: {
          click: async () => {
            await api.signOut(); // the change listener below shows the sign-in page
          },
        },
      },
      "Sign out",
    ),
  );
}

function notFound(main) {
  mount(
    main,
    h(
      "section",
      { class: "page narrow" },
      h("h1", {}, "Page not found"),
      h("p", {}, h("a", { href: "/" }, "Go to your meetings")),
    ),
  );
}

route("/", meetingsView, { title: "Meetings" });
route("/signin", signInView, { auth: false, title: "Sign in" });
route("/signup", signUpView, { auth: false, title: "Sign up" });
route("/meetings/new", meetingFormView, { title: "New meeting" });
route("/meetings/:id", meetingView, { title: "Meeting" });
route("/meetings/:id/edit", meetingFormView, { title: "Edit meeting" });
route("/meetings/:id/join", prejoinView, { title: "Join meeting" });
route("/meetings/:id/room", roomView, { title: "Meeting room" });
route("/404", notFound, { auth: false, title: "Not found" });

api.addEventListener("change", () => {
  renderNav();
  // Signed out elsewhere (another tab, or the session expired): back to the sign-in page.
  if (!api.signedIn && !["/signin", "/signup"].includes(location.pathname)) {
    navigate(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
  }
});
renderNav();
start();
