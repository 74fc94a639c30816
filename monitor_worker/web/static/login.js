"use strict";
if (new URLSearchParams(location.search).has("failed")) {
  document.getElementById("login-error").textContent = "That token was not accepted.";
}
