// 汇通 共享门户: small progressive enhancement. Pages work without it.
// 1. A pull's page follows its progress live (server-sent events).
// 2. A destructive action asks once, stating its consequence (data-confirm).
(function () {
  "use strict";
  var live = document.querySelector("[data-events]");
  if (live && window.EventSource) {
    var bar = document.getElementById("pull-progress");
    var text = document.getElementById("pull-text");
    var es = new EventSource(live.getAttribute("data-events"));
    es.addEventListener("progress", function (e) {
      var v = JSON.parse(e.data);
      if (bar) { bar.max = Math.max(v.total, 1); bar.value = v.done; }
      if (text) { text.textContent = v.text; }
    });
    es.addEventListener("end", function () {
      es.close();
      window.location.reload();
    });
  }
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var q = f.getAttribute && f.getAttribute("data-confirm");
    if (q && !window.confirm(q)) { e.preventDefault(); }
  });
})();
