// Sign in and sign up.

import { api } from "../api.js";
import { field, h, mount, showFormError } from "../dom.js";
import { navigate } from "../router.js";

function safeNext(next) {
  // Only same-site paths: never an open redirect to another origin.
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

function submitting(form, busy) {
  for (const el of form.querySelectorAll("button, input")) el.disabled = busy;
  form.setAttribute("aria-busy", busy ? "true" : "false");
}

export function signInView(main, _params, query) {
  if (api.signedIn) {
    navigate(safeNext(query.next), { replace: true });
    return;
  }
  const identifier = h("input", { name: "username", autocomplete: "username", required: true, maxlength: 320 });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const fields = { username: field("Username or e-mail", identifier), password: field("Password", password) };
  const form = h(
    "form",
    {
      class: "card stack",
      novalidate: true,
      on: {
        submit: async (e) => {
          e.preventDefault();
          if (!identifier.value.trim() || !password.value) {
            showFormError(form, fields, { message: "Enter your username (or e-mail) and password" });
            return;
          }
          submitting(form, true);
          try {
            await api.signIn(identifier.value.trim(), password.value);
            navigate(safeNext(query.next), { replace: true });
          } catch (err) {
            submitting(form, false);
            showFormError(form, fields, err);
          }
        },
      },
    },
    h("p", { class: "form-error", role: "alert", tabindex: "-1", hidden: true }),
    fields.username,
    fields.password,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  const signupHref = "/signup" + (query.next ? `?next=${encodeURIComponent(query.next)}` : "");
  mount(
    main,
    h(
      "section",
      { class: "page narrow" },
      h("h1", {}, "Sign in"),
      form,
      h("p", {}, "New here? ", h("a", { href: signupHref }, "Create an account")),
    ),
  );
}

export function signUpView(main, _params, query) {
  if (api.signedIn) {
    navigate(safeNext(query.next), { replace: true });
    return;
  }
  const username = h("input", {
    name: "username",
    autocomplete: "username",
    required: true,
    minlength: 3,
    maxlength: 32,
    pattern: "[A-Za-z0-9_.-]+",
  });
  const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const nickname = h("input", { name: "nickname", autocomplete: "nickname", maxlength: 100 });
  const password = h("input", {
    name: "password",
    type: "password",
    autocomplete: "new-password",
    required: true,
    minlength: 8,
  });
  const fields = {
    username: field("Username", username, "Letters, digits, dots, dashes and underscores."),
    email: field("E-mail", email),
    nickname: field("Display name (optional)", nickname, "What others see in meetings."),
    password: field("Password", password, "At least 8 characters."),
  };
  const form = h(
    "form",
    {
      class: "card stack",
      novalidate: true,
      on: {
        submit: async (e) => {
          e.preventDefault();
          if (password.value.length < 8) {
            showFormError(form, fields, { message: "Check the form", details: { password: "At least 8 characters" } });
            return;
          }
          submitting(form, true);
          try {
            await api.signUp({
              username: username.value.trim(),
              email: email.value.trim(),
              password: password.value,
              nickname: nickname.value.trim(),
            });
            navigate(safeNext(query.next), { replace: true });
          } catch (err) {
            submitting(form, false);
            showFormError(form, fields, err);
          }
        },
      },
    },
    h("p", { class: "form-error", role: "alert", tabindex: "-1", hidden: true }),
    fields.username,
    fields.email,
    fields.nickname,
    fields.password,
    h("button", { type: "submit", class: "primary" }, "Create account"),
  );
  const signinHref = "/signin" + (query.next ? `?next=${encodeURIComponent(query.next)}` : "");
  mount(
    main,
    h(
      "section",
      { class: "page narrow" },
      h("h1", {}, "Create your account"),
      form,
      h("p", {}, "Already have an account? ", h("a", { href: signinHref }, "Sign in")),
    ),
  );
}
