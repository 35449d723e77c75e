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

  // Keyboard shortcuts. None fires while the person is typing in a field.
  function isTyping(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable) return true;
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select") return true;
    if (tag !== "input") return false;
    var type = (target.getAttribute("type") || "text").toLowerCase();
    return ["checkbox", "radio", "button", "submit", "reset"].indexOf(type) === -1;
  }

  function rowLinks() {
    return Array.prototype.slice.call(document.querySelectorAll("table[data-rows] .row-link"));
  }

  function moveRow(step) {
    var links = rowLinks();
    if (!links.length) return false;
    var active = document.activeElement;
    var row = active && active.closest ? active.closest("tr") : null;
    var index = -1;
    for (var i = 0; i < links.length; i++) {
      if (links[i] === active || (row && links[i].closest("tr") === row)) { index = i; break; }
    }
    var next = index === -1 ? (step > 0 ? 0 : links.length - 1)
                            : Math.min(links.length - 1, Math.max(0, index + step));
    links[next].focus();
    return true;
  }

  function follow(key) {
    var target = document.querySelector('[data-shortcut="' + key + '"]');
    if (!target) return false;
    target.click();
    return true;
  }

  // p and d on a list of invoices: the selected rows if any are ticked (as "Pay selected" and
  // "Download selected" would), else the row that has focus.
  function listAction(key) {
    var table = document.querySelector("table[data-rows]");
    if (!table) return null;
    var form = table.closest("form");
    if (form && form.querySelector("input.row-select:checked")) {
      return form.querySelector('[data-selection-shortcut="' + key + '"]');
    }
    var active = document.activeElement;
    var row = active && active.closest ? active.closest("tr") : null;
    if (!row || !table.contains(row)) return null;
    return row.querySelector('[data-row-shortcut="' + key + '"]');
  }

  function onList(key) {
    var target = listAction(key);
    if (!target) return false;
    target.click();
    return true;
  }

  function focusSearch() {
    var search = document.querySelector('input[type="search"]');
    if (!search) return false;
    search.focus();
    search.select();
    return true;
  }

  // The "?" list shows only what works here: each description names the condition it needs,
  // and a key with no description left is hidden.
  var AVAILABLE = {
    search: function () { return !!document.querySelector('input[type="search"]'); },
    rows: function () { return rowLinks().length > 0; },
    "list-p": function () {
      return rowLinks().length > 0 &&
        !!document.querySelector('table[data-rows] [data-row-shortcut="p"], [data-selection-shortcut="p"]');
    },
    "list-d": function () { return rowLinks().length > 0; },
    p: function () { return !!document.querySelector('[data-shortcut="p"]'); },
    d: function () { return !!document.querySelector('[data-shortcut="d"]'); },
    s: function () { return !!document.querySelector('[data-shortcut="s"]'); }
  };

  function showShortcuts() {
    var help = document.getElementById("shortcuts");
    if (!help || typeof help.showModal !== "function") return false;
    var entries = help.querySelectorAll("[data-shortcut-when]");
    for (var i = 0; i < entries.length; i++) {
      var test = AVAILABLE[entries[i].getAttribute("data-shortcut-when")];
      entries[i].hidden = !(test && test());
    }
    var keys = help.querySelectorAll(".shortcut-list > div");
    for (var k = 0; k < keys.length; k++) {
      keys[k].hidden = !keys[k].querySelector("dd:not([hidden])");
    }
    help.showModal();
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    // From the search field, ↓ goes to the first result (as in a combobox).
    if (event.key === "ArrowDown" && event.target.type === "search" && rowLinks().length) {
      event.preventDefault();
      rowLinks()[0].focus();
      return;
    }
    if (isTyping(event.target)) return;
    if (document.querySelector("dialog[open]") && event.key !== "Escape") return;
    var handled = false;
    if (event.key === "/") {
      handled = focusSearch();
    } else if (event.key === "?") {
      handled = showShortcuts();
    } else if (event.key === "ArrowDown") {
      handled = moveRow(1);
    } else if (event.key === "ArrowUp") {
      handled = moveRow(-1);
    } else if (event.key === "p" || event.key === "d") {
      handled = onList(event.key) || follow(event.key);
    } else if (event.key === "s") {
      handled = follow(event.key);
    }
    if (handled) event.preventDefault();
  });

  // Paging swaps its own links away: the keyboard lands on the first invoice of the new page
  // (not on the page's body, where the next Tab would start from the top).
  document.addEventListener("htmx:afterSettle", function (event) {
    var detail = event.detail || {};
    var trigger = detail.requestConfig && detail.requestConfig.elt;
    if (!trigger || !trigger.closest || !trigger.closest(".pagination")) return;
    if (document.activeElement && document.activeElement !== document.body) return;
    var first = detail.target && detail.target.querySelector(".row-link");
    if (first) first.focus();
  });

  // A request that never reached the server (offline, timeout): say so where the results go.
  document.addEventListener("htmx:sendError", function (event) {
    var target = event.detail && event.detail.target;
    if (!target) return;
    var box = document.createElement("div");
    box.className = "alert alert-error";
    box.setAttribute("role", "alert");
    var text = document.createElement("p");
    text.textContent = document.body.getAttribute("data-offline-message") || "";
    var retry = document.createElement("a");
    retry.className = "button";
    retry.href = window.location.href;
    retry.textContent = document.body.getAttribute("data-retry-label") || "Retry";
    box.appendChild(text);
    box.appendChild(retry);
    target.replaceChildren(box);
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

// Focus follows a step change: after a payment step (or its errors) is swapped in, or a page
// opens on one, the element marked data-autofocus (its heading or its error summary) gets focus,
// so keyboard and screen-reader users land where the new content starts.
(function () {
  "use strict";
  function focusMarked(root) {
    var target = root && root.querySelector ? root.querySelector("[data-autofocus]") : null;
    if (target) target.focus();
  }
  // htmx:load fires on each piece of new content once it is in the page.
  document.addEventListener("htmx:load", function (event) {
    var root = event.detail && event.detail.elt;
    if (!root || root === document.body) return;
    if (root.matches && root.matches("[data-autofocus]")) root.focus();
    else focusMarked(root);
  });
  focusMarked(document.getElementById("main"));
})();

// ---------------------------------------------------------------------------------------------
// Selection bar of the invoice list (kept apart from the shortcuts above). Without this block
// the bar's buttons still submit the checked rows; with it the bar says "N selected" (a live
// region) and offers Select all, which turns into Clear selection once every row is checked.
(function () {
  "use strict";

  function boxes(form) {
    return Array.prototype.slice.call(form.querySelectorAll("input.row-select"));
  }

  function update(form) {
    var count = form.querySelector("[data-selection-count]");
    var toggle = form.querySelector("[data-select-all]");
    if (!count || !toggle) return;
    var all = boxes(form);
    var checked = all.filter(function (box) { return box.checked; }).length;
    var labels = JSON.parse(count.getAttribute("data-labels") || "[]");
    var text = labels[Math.min(checked, labels.length - 1)] || String(checked);
    if (count.textContent !== text) count.textContent = text;
    count.hidden = false;
    var offered = all.filter(function (box) { return !box.hasAttribute("data-select-all-skip"); });
    var everything = offered.length > 0 && offered.every(function (box) { return box.checked; });
    toggle.textContent = toggle.getAttribute(everything ? "data-clear-label" : "data-select-label");
    toggle.hidden = false;
  }

  function init(root) {
    var forms = root.querySelectorAll ? root.querySelectorAll("form[data-selection]") : [];
    Array.prototype.forEach.call(forms, update);
    if (root.matches && root.matches("form[data-selection]")) update(root);
  }

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (box.matches && box.matches("input.row-select") && box.form) update(box.form);
  });

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest && event.target.closest("[data-select-all]");
    if (!toggle || !toggle.form) return;
    // "Select all" leaves out invoices held by a dispute (data-select-all-skip): they are not
    // to be paid while the dispute is open; one can still tick them by hand.
    var all = boxes(toggle.form).filter(function (box) { return !box.hasAttribute("data-select-all-skip"); });
    var everything = all.every(function (box) { return box.checked; });
    all.forEach(function (box) { box.checked = !everything; });
    update(toggle.form);
  });

  // New results swapped in by a filter; a page restored from the back/forward cache.
  document.addEventListener("htmx:load", function (event) {
    if (event.detail && event.detail.elt) init(event.detail.elt);
  });
  window.addEventListener("pageshow", function () { init(document); });
  init(document);
})();
