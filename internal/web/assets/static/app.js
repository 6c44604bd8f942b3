// pgrelay web UI: small progressive enhancements. Every page works without
// this file; it adds copy buttons, flavor defaults on the connection form,
// and focus on the error summary.
(function () {
  "use strict";

  var live = document.getElementById("live");
  function announce(text) {
    if (!live) return;
    live.textContent = "";
    window.setTimeout(function () { live.textContent = text; }, 50);
  }

  // Copy buttons: data-copy names the element whose text is copied. They
  // are hidden in the HTML and shown here, since they need JavaScript.
  function selectText(el) {
    if (el.select) {
      el.focus();
      el.select();
      return;
    }
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    el.focus();
  }

  function copied(btn, ok) {
    var label = btn.dataset.label || btn.textContent;
    btn.dataset.label = label;
    btn.textContent = ok ? "Copied" : "Press Ctrl+C";
    btn.classList.toggle("copied", ok);
    announce(ok ? "Copied to the clipboard" : "Text selected: press Control C or Command C to copy");
    window.clearTimeout(btn._reset);
    btn._reset = window.setTimeout(function () {
      btn.textContent = label;
      btn.classList.remove("copied");
    }, 2000);
  }

  function fallbackCopy(btn, el) {
    selectText(el);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    copied(btn, ok);
  }

  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    var el = document.getElementById(btn.dataset.copy);
    if (!el) return;
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var text = el.value !== undefined ? el.value : el.textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { copied(btn, true); },
          function () { fallbackCopy(btn, el); });
      } else {
        fallbackCopy(btn, el);
      }
    });
  });

  // Connection form: the flavor sets the defaults that differ (SSL mode,
  // example database and host) unless the user chose an SSL mode.
  var flavor = document.getElementById("f-flavor");
  var sslmode = document.getElementById("f-sslmode");
  if (flavor && sslmode) {
    sslmode.addEventListener("change", function () { sslmode.dataset.chosen = "1"; });
    flavor.addEventListener("change", function () {
      var opt = flavor.options[flavor.selectedIndex];
      if (!opt) return;
      if (!sslmode.dataset.chosen && opt.dataset.sslmode) {
        sslmode.value = opt.dataset.sslmode;
      }
      var db = document.getElementById("f-database");
      if (db && opt.dataset.database) db.placeholder = opt.dataset.database;
      var host = document.getElementById("f-host");
      if (host && opt.dataset.host) host.placeholder = opt.dataset.host;
    });
  }

  // Move focus to the error summary so that keyboard and screen reader
  // users land on the list of problems.
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();
})();
