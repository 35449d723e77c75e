// Small enhancements only; every page works without this file.
(function () {
  "use strict";
  // Move focus to the main region after an in-page skip link is used (Safari keeps it on the link).
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a.skip-link");
    if (!link) return;
    var target = document.getElementById("main");
    if (target) target.focus();
  });
})();
