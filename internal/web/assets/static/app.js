// pgrelay web UI: small progressive enhancements. Every page works without
// this file; it adds copy buttons, flavor defaults on the connection form,
// focus on the error summary, step editing in the page on the job form,
// filters that apply on change, and the run page's live log and status.
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

  // Run history: a filter applies as soon as it changes.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });

  // Textareas marked data-autosize grow with their text, up to a limit.
  function autosize(el) {
    el.style.height = "auto";
    el.style.height = Math.min(el.scrollHeight + 2, 420) + "px";
  }
  document.querySelectorAll("textarea[data-autosize]").forEach(autosize);
  document.addEventListener("input", function (e) {
    if (e.target.matches && e.target.matches("textarea[data-autosize]")) autosize(e.target);
  });

  setupStepEditor();
  followRun();

  // Job form: add, remove and move steps in the page. Without this script
  // the same buttons post the form and the server does it.
  function setupStepEditor() {
    var list = document.getElementById("step-list");
    var tmpl = document.getElementById("step-template");
    if (!list || !tmpl) return;
    var max = parseInt(list.dataset.max || "100", 10);
    var adders = [document.getElementById("add-sql"), document.getElementById("add-command")];

    function steps() { return Array.prototype.slice.call(list.querySelectorAll(":scope > [data-step]")); }

    // rename points a step's names, ids and labels at position i.
    function rename(li, i) {
      li.querySelectorAll("*").forEach(function (el) {
        ["name", "id", "for", "aria-describedby"].forEach(function (a) {
          var v = el.getAttribute(a);
          if (v) el.setAttribute(a, v.replace(/steps\[\d+\]/g, "steps[" + i + "]").replace(/f-steps-\d+/g, "f-steps-" + i));
        });
        var label = el.getAttribute("aria-label");
        if (label) el.setAttribute("aria-label", label.replace(/step \d+/, "step " + (i + 1)));
        if (el.tagName === "BUTTON" && el.name === "op") el.value = el.value.replace(/^(up|down|remove)-\d+$/, "$1-" + i);
      });
      li.querySelectorAll("[data-step-num]").forEach(function (n) { n.textContent = String(i + 1); });
    }

    function renumber() {
      var all = steps();
      // Renaming radios can briefly put two steps' kinds in one group,
      // which unchecks one: remember the checked ones and restore them.
      var checked = list.querySelectorAll("input[type=radio]:checked");
      all.forEach(rename);
      Array.prototype.forEach.call(checked, function (r) { r.checked = true; });
      all.forEach(function (li, i) {
        li.querySelector('[data-op="up"]').disabled = i === 0;
        li.querySelector('[data-op="down"]').disabled = i === all.length - 1;
      });
      adders.forEach(function (b) { if (b) b.disabled = all.length >= max; });
    }

    function flash(li) {
      li.classList.remove("moved");
      void li.offsetWidth;
      li.classList.add("moved");
    }

    function add(kind) {
      var li = tmpl.content.querySelector("[data-step]").cloneNode(true);
      rename(li, steps().length);
      li.querySelector('input[value="' + kind + '"]').checked = true;
      list.appendChild(li);
      renumber();
      var field = li.querySelector(kind === "sql" ? "textarea" : "input.mono");
      if (field) field.focus();
      announce("Step " + steps().length + " added");
    }

    adders.forEach(function (b) {
      if (!b) return;
      b.addEventListener("click", function (e) {
        e.preventDefault();
        add(b.value.replace("add-", ""));
      });
    });

    list.addEventListener("click", function (e) {
      var btn = e.target.closest("button[data-op]");
      if (!btn || btn.disabled) return;
      e.preventDefault();
      var li = btn.closest("[data-step]");
      var op = btn.dataset.op;
      if (op === "remove") {
        var next = li.nextElementSibling || li.previousElementSibling;
        li.remove();
        renumber();
        var target = next ? next.querySelector("fieldset") : document.getElementById("add-sql");
        if (target) target.focus();
        announce("Step removed; " + steps().length + " left");
        return;
      }
      if (op === "up" && li.previousElementSibling) list.insertBefore(li, li.previousElementSibling);
      if (op === "down" && li.nextElementSibling) list.insertBefore(li.nextElementSibling, li);
      renumber();
      flash(li);
      (btn.disabled ? li.querySelector('[data-op="' + (op === "up" ? "down" : "up") + '"]') : btn).focus();
      announce("Step moved to position " + (steps().indexOf(li) + 1));
    });
    renumber();
  }

  // Formatting shared with the server (render.go): times in UTC, durations
  // like "45 ms", "2.4 s", "12 s", "3 min 12 s", "1 h 5 min".
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function clock(d) { return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()); }
  function fmtTime(d) { return d.getUTCDate() + " " + MONTHS[d.getUTCMonth()] + " " + d.getUTCFullYear() + ", " + clock(d) + " UTC"; }
  function fmtDuration(ms) {
    if (ms < 0) return "—";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 10000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 60000) return Math.floor(ms / 1000) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.floor(ms % 60000 / 1000) + " s";
    return Math.floor(ms / 3600000) + " h " + Math.floor(ms % 3600000 / 60000) + " min";
  }
  // stamp is a time as the run page's facts show it (the "stamp" template).
  function stamp(iso) {
    var d = new Date(iso);
    var t = document.createElement("time");
    t.className = "stamp";
    t.dateTime = iso;
    t.title = fmtTime(d);
    var a = document.createElement("span");
    a.className = "stamp-t";
    a.textContent = clock(d);
    var b = document.createElement("span");
    b.className = "stamp-d";
    b.textContent = d.getUTCDate() + " " + MONTHS[d.getUTCMonth()] + " " + d.getUTCFullYear() + " UTC";
    t.appendChild(a);
    t.appendChild(b);
    return t;
  }
  function terminal(s) { return s === "succeeded" || s === "failed" || s === "cancelled"; }

  // Run page: the log follows live over server-sent events (or by polling
  // the log when the stream is not available), and the status, times,
  // steps and failure reason change as the run does.
  function followRun() {
    var page = document.getElementById("run");
    var log = document.getElementById("log");
    if (!page || !log) return;
    var id = page.dataset.run;
    var api = "/api/v1/runs/" + encodeURIComponent(id);
    var after = parseInt(log.dataset.after || "0", 10) || 0;
    var skew = Date.parse(page.dataset.serverNow) - Date.now();
    if (isNaN(skew)) skew = 0;
    var lines = log.querySelectorAll(".ll");
    var count = lines.length;
    var lastStep = count ? parseInt(lines[count - 1].dataset.step, 10) : -2;
    var state = document.getElementById("live-state");
    var countEl = document.getElementById("log-count");
    var empty = document.getElementById("log-empty");
    var jump = document.getElementById("log-jump");
    var followBox = document.getElementById("log-follow");
    var followLabel = document.getElementById("follow-label");
    var badges = document.getElementById("status-badges");
    var follow = true;
    var programmatic = false;
    var pending = document.createDocumentFragment();
    var queued = false;
    var run = { status: page.dataset.status };
    var ticker = null;

    function setState(s, text) {
      state.dataset.state = s;
      state.querySelector(".live-text").textContent = text;
    }
    function toBottom() {
      programmatic = true;
      log.scrollTop = log.scrollHeight;
      window.requestAnimationFrame(function () { programmatic = false; });
      jump.hidden = true;
    }
    function atBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 24; }

    log.addEventListener("scroll", function () {
      if (programmatic) return;
      follow = atBottom();
      followBox.checked = follow;
      if (follow) jump.hidden = true;
    });
    followBox.addEventListener("change", function () {
      follow = followBox.checked;
      if (follow) toBottom();
    });
    jump.addEventListener("click", function () {
      follow = true;
      followBox.checked = true;
      toBottom();
      log.focus();
    });
    var target = window.location.hash && document.getElementById(window.location.hash.slice(1));
    if (target && log.contains(target)) {
      follow = false;
      followBox.checked = false;
      target.scrollIntoView({ block: "center" });
    } else {
      toBottom();
    }

    function addLine(l) {
      if (!l || typeof l.seq !== "number" || l.seq <= after) return;
      after = l.seq;
      var div = document.createElement("div");
      var stream = l.stream === "stderr" || l.stream === "system" ? l.stream : "stdout";
      div.className = "ll ll-" + stream;
      div.dataset.seq = String(l.seq);
      div.dataset.step = String(l.step);
      if (l.step !== lastStep) {
        div.className += " ll-newstep";
        if (l.step >= 0 && !document.getElementById("log-step-" + (l.step + 1))) div.id = "log-step-" + (l.step + 1);
      }
      lastStep = l.step;
      var parts = [clock(new Date(l.time)), l.step >= 0 ? String(l.step + 1) : "",
        stream === "stderr" ? "err" : stream === "system" ? "\u203a" : "", l.text];
      ["ll-t", "ll-s", "ll-m", "ll-x"].forEach(function (cls, i) {
        var span = document.createElement("span");
        span.className = cls;
        span.textContent = parts[i];
        div.appendChild(span);
      });
      pending.appendChild(div);
      count++;
      if (!queued) {
        queued = true;
        window.requestAnimationFrame(flush);
      }
    }
    function flush() {
      queued = false;
      log.insertBefore(pending, empty);
      pending = document.createDocumentFragment();
      empty.hidden = count > 0;
      countEl.textContent = count + (count === 1 ? " line" : " lines");
      if (follow) toBottom(); else jump.hidden = false;
    }

    function badge(status) {
      var b = badges.content.querySelector(".status-" + status);
      return b ? b.cloneNode(true) : document.createTextNode(status);
    }
    function fact(name) { return page.querySelector('[data-fact="' + name + '"]'); }
    function setTime(el, iso) {
      el.textContent = "";
      if (iso) el.appendChild(stamp(iso)); else el.textContent = "—";
    }
    function setButtonText(btn, text) {
      var last = btn.lastChild;
      if (last && last.nodeType === 3) last.textContent = text; else btn.appendChild(document.createTextNode(text));
    }

    function tick() {
      var now = Date.now() + skew;
      var d = fact("duration");
      if (run.started_at) d.textContent = fmtDuration((run.ended_at ? Date.parse(run.ended_at) : now) - Date.parse(run.started_at));
      (run.steps || []).forEach(function (s) {
        if (s.status !== "running" || !s.started_at) return;
        var row = page.querySelector('tr[data-step="' + s.index + '"] [data-cell="duration"]');
        if (row) row.textContent = fmtDuration(now - Date.parse(s.started_at));
      });
    }

    function applyRun(r) {
      var was = run.status;
      run = r;
      page.dataset.status = r.status;
      var st = document.getElementById("run-status");
      st.textContent = "";
      st.appendChild(badge(r.status));
      setTime(fact("started"), r.started_at);
      setTime(fact("ended"), r.ended_at);
      var w = fact("worker");
      w.textContent = "";
      if (r.worker) {
        var c = document.createElement("code");
        c.textContent = r.worker;
        w.appendChild(c);
      } else w.textContent = "—";
      fact("attempt").textContent = r.attempt ? String(r.attempt) : "—";
      if (!r.started_at) fact("duration").textContent = "—";
      var failedStep = null;
      (r.steps || []).forEach(function (s) {
        var row = page.querySelector('tr[data-step="' + s.index + '"]');
        if (!row) return;
        if (s.status === "failed" && !failedStep) failedStep = s;
        row.className = "step-row step-row-" + s.status;
        var cell = row.querySelector('[data-cell="status"]');
        cell.textContent = "";
        cell.appendChild(badge(s.status));
        row.querySelector('[data-cell="exit"]').textContent = typeof s.exit_code === "number" ? String(s.exit_code) : "—";
        row.querySelector('[data-cell="duration"]').textContent = s.started_at ? fmtDuration(s.duration_ms) : "—";
        var err = row.querySelector('[data-cell="error"]');
        err.textContent = s.error || "";
        err.hidden = !s.error;
      });
      var banner = document.getElementById("run-banner");
      var ended = terminal(r.status);
      var show = r.status === "failed" || r.status === "cancelled" || (r.cancel_requested && !ended);
      banner.className = "run-banner run-banner-" + r.status + (r.cancel_requested && !ended ? " run-banner-cancelling" : "");
      banner.hidden = !show;
      if (show) {
        document.getElementById("run-banner-title").textContent = r.status === "failed" ?
          "Run failed" + (failedStep ? " at step " + (failedStep.index + 1) : "") :
          r.status === "cancelled" ? "Run cancelled" : "Cancelling…";
        document.getElementById("run-reason").textContent = r.reason || "";
      }
      var cancel = document.getElementById("cancel-form");
      if (cancel) {
        cancel.hidden = ended;
        var cb = document.getElementById("cancel-run");
        if (r.cancel_requested && !ended) {
          cb.disabled = true;
          setButtonText(cb, "Cancelling…");
        }
      }
      var rerun = document.getElementById("rerun-form");
      if (rerun) rerun.hidden = !ended;
      if (ended) {
        if (ticker) window.clearInterval(ticker);
        ticker = null;
        if (!terminal(was)) announce("Run " + r.status + (r.reason ? ": " + r.reason : ""));
      } else if (!ticker && r.started_at) {
        ticker = window.setInterval(tick, 1000);
      }
      tick();
    }

    function finish() {
      setState("ended", "Complete");
      if (followLabel) followLabel.hidden = true;
      if (!count) empty.textContent = "This run wrote no log.";
    }

    // Polling: the fallback when the event stream is not available.
    function fetchJSON(url) {
      return window.fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (res) {
        if (!res.ok) throw new Error(url + ": HTTP " + res.status);
        return res.json();
      });
    }
    function readLog() {
      return fetchJSON(api + "/log?limit=1000&after=" + after).then(function (body) {
        (body.lines || []).forEach(addLine);
        if ((body.lines || []).length >= 1000) return readLog();
      });
    }
    function poll() {
      readLog().then(function () { return fetchJSON(api); }).then(function (r) {
        applyRun(r);
        if (terminal(r.status)) return readLog().then(finish);
        setState("live", "Live");
        window.setTimeout(poll, 1000);
      }).catch(function () {
        setState("offline", "Reconnecting…");
        window.setTimeout(poll, 3000);
      });
    }

    function stream() {
      if (!window.EventSource) { poll(); return; }
      var opened = false;
      var es = new EventSource(api + "/events?after=" + after);
      es.addEventListener("open", function () { opened = true; setState("live", "Live"); });
      es.addEventListener("log", function (e) { addLine(JSON.parse(e.data)); });
      es.addEventListener("run", function (e) { applyRun(JSON.parse(e.data)); });
      es.addEventListener("end", function (e) {
        es.close();
        applyRun(JSON.parse(e.data));
        finish();
      });
      es.addEventListener("error", function (e) {
        if (e.data || es.readyState === EventSource.CLOSED) {
          // A failure told by the server, or a response that is not a
          // stream: poll if the stream never worked, else start it again
          // after a pause.
          es.close();
          if (!opened) { poll(); return; }
          setState("offline", "Reconnecting…");
          window.setTimeout(stream, 3000);
          return;
        }
        setState("offline", "Reconnecting…"); // the browser reconnects by itself
      });
    }

    if (terminal(run.status)) {
      // A page of an ended run may have been cut: read the rest.
      if (log.dataset.more === "1") readLog().catch(function () {});
      return;
    }
    if (followLabel) followLabel.hidden = false;
    setState("connecting", "Connecting…");
    stream();
  }
})();
