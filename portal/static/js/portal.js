// Small enhancements only; every page works without this file.
(function () {
  "use strict";

  // Move focus to the main region after the skip link is used (Safari keeps it on the link).
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a.skip-link");
    if (!link) return;
    var target = document.getElementById("main");
    if (target) target.focus();
  });

  // Idle warning: two minutes before the server's idle timeout, offer to stay signed in.
  var WARN_BEFORE_MS = 120 * 1000;
  var idleSeconds = parseInt(document.body.getAttribute("data-idle-seconds") || "0", 10);
  var dialog = document.getElementById("idle-warning");
  if (!idleSeconds || !dialog || typeof dialog.showModal !== "function") return;

  var warnTimer = null;
  var expireTimer = null;

  function schedule() {
    clearTimeout(warnTimer);
    clearTimeout(expireTimer);
    var idleMs = idleSeconds * 1000;
    warnTimer = setTimeout(function () {
      if (!dialog.open) dialog.showModal();
    }, Math.max(0, idleMs - WARN_BEFORE_MS));
    // Once the server has forgotten the session, reloading lands on sign-in with its message.
    expireTimer = setTimeout(function () {
      window.location.reload();
    }, idleMs + 1000);
  }

  // Any request to the server counts as activity, as it does on the server.
  document.body.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail && event.detail.successful) schedule();
    var form = document.getElementById("idle-extend");
    if (form && event.detail && event.detail.elt === form && dialog.open) dialog.close();
  });
  window.portalIdle = { schedule: schedule, dialog: dialog };
  schedule();
})();
