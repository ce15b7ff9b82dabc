// The signed-out view: log in, or create an account (then log in with it).

import { byId, busy } from "../dom.js";

/** Wires both forms; `onSignedIn` runs after a successful login. */
export function setupAuth(api, onSignedIn) {
  const loginForm = byId("login-form");
  const loginError = byId("login-error");
  const registerForm = byId("register-form");
  const registerError = byId("register-error");

  loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    loginError.textContent = "";
    const username = byId("login-username").value.trim();
    const password = byId("login-password").value;
    if (!username || !password) {
      loginError.textContent = "Enter your username and password.";
      return;
    }
    busy(loginForm, async () => {
      try {
        await api.login(username, password);
        byId("login-password").value = "";
        await onSignedIn();
      } catch (err) {
        loginError.textContent = describe(err);
        byId("login-password").focus();
      }
    });
  });

  registerForm.addEventListener("submit", (event) => {
    event.preventDefault();
    registerError.textContent = "";
    const username = byId("register-username").value.trim();
    const password = byId("register-password").value;
    if (!username || !password) {
      registerError.textContent = "Choose a username and a password.";
      return;
    }
    busy(registerForm, async () => {
      try {
        await api.register(username, password);
        await api.login(username, password);
        byId("register-password").value = "";
        await onSignedIn();
      } catch (err) {
        // The server's own words: they say which rule the password breaks.
        registerError.textContent = describe(err);
        (err.code === "weak_password" ? byId("register-password") : byId("register-username")).focus();
      }
    });
  });
}

export function showAuth() {
  byId("app-view").hidden = true;
  byId("auth-view").hidden = false;
  byId("login-username").focus();
}

function describe(err) {
  if (err.code === "rate_limited") {
    return `Too many attempts. Try again in ${err.retryAfter ?? 60} seconds.`;
  }
  return err.message || "Something went wrong.";
}
