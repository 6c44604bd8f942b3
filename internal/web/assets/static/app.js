// pgrelay web UI: small progressive enhancements. Every page works without
// this file; it adds copy buttons, flavor defaults on the connection form,
// focus on the error summary, step editing in the page on the job form,
// filters that apply on change, the run page's live log and status, and
// connection tests whose steps appear as they finish.
(function () {
  "use strict";

  var live = document.getElementById("live");
  // announce says text in the live region. An announcement still pending
  // gives way to a newer one: a test refused at once is not followed by
  // the "Testing the connection" it replaced.
  var announcing = 0;
  function announce(text) {
    if (!live) return;
    live.textContent = "";
    window.clearTimeout(announcing);
    announcing = window.setTimeout(function () { live.textContent = text; }, 50);
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

  // Run history: a filter chosen with the mouse (or touch) applies as soon
  // as it changes. From the keyboard, arrow keys on a closed select change
  // its value option by option: applying each would leave the page under
  // the user (WCAG 3.2.2) and drop the focus, so there a change waits for
  // Enter or the Filter button.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    var keyed = false;
    sel.addEventListener("keydown", function (e) {
      if (e.key === "Enter") {
        e.preventDefault();
        sel.form.submit();
        return;
      }
      if (e.key !== "Tab" && e.key !== "Shift") keyed = true;
    });
    sel.addEventListener("pointerdown", function () { keyed = false; });
    sel.addEventListener("change", function () {
      if (keyed) return;
      sel.form.submit();
    });
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
  setupConnectionTests();

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
  // as package elapsed formats them ("0.52 ms", "412 ms", "1.2 s", "12 s",
  // "3 min 12 s", "1 h 5 min"), with the same rounding.
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function clock(d) { return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()); }
  function fmtTime(d) { return d.getUTCDate() + " " + MONTHS[d.getUTCMonth()] + " " + d.getUTCFullYear() + ", " + clock(d) + " UTC"; }
  function fmtDuration(ms) {
    if (!(ms >= 0)) return "\u2014";
    if (ms === 0) return "0 ms";
    var hundredths = Math.round(ms * 100) / 100;
    if (hundredths < 10) return hundredths === 0 ? "< 0.01 ms" : String(hundredths) + " ms";
    var whole = Math.round(ms);
    if (whole < 1000) return whole + " ms";
    var tenths = Math.round(ms / 100) / 10;
    if (tenths < 10) return tenths.toFixed(1) + " s";
    var sec = Math.round(ms / 1000);
    if (sec < 60) return sec + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min " + (sec % 60) + " s";
    return Math.floor(sec / 3600) + " h " + Math.floor(sec % 3600 / 60) + " min";
  }
  // The browser tests compare it with the server's formatting.
  window.pgrelay = { fmtDuration: fmtDuration };
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
      // A scroll of ours lands at the bottom; one that does not is the
      // user's, even in the frame of ours (lines arrive every few ms).
      if (programmatic && atBottom()) return;
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
      // The time as the server renders it (run.html): the time of day in
      // UTC, the full time in its title.
      var d = new Date(l.time);
      var parts = [clock(d), l.step >= 0 ? String(l.step + 1) : "",
        stream === "stderr" ? "err" : stream === "system" ? "\u203a" : "", l.text];
      ["ll-t", "ll-s", "ll-m", "ll-x"].forEach(function (cls, i) {
        var el = document.createElement(i === 0 ? "time" : "span");
        el.className = cls;
        el.textContent = parts[i];
        if (i === 0 && !isNaN(d.getTime())) {
          el.dateTime = d.toISOString();
          el.title = fmtTime(d);
        }
        div.appendChild(el);
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
      var cl = document.getElementById("run-cleanup");
      if (cl) {
        cl.hidden = !r.cleanup;
        if (r.cleanup) {
          cl.dataset.status = r.cleanup.status;
          cl.textContent = "On the server: " + r.cleanup.message + "." + (r.cleanup.status === "pending" ?
            " The statement may still be running until pgrelay reaches the server and stops it. If this stays pending, next: test the connection, " +
            "check that sshd runs on the bastion, and that no load balancer in front of it closes idle connections in under 30 s." : "");
        }
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
  // Connection tests: the Test connection buttons (list rows, a
  // connection's page, the form) stream the test's steps from the REST
  // API into a test panel. The API streams a POST, which EventSource
  // cannot send: fetch() reads the server-sent events from the response
  // body. Without fetch streaming the buttons post their form and the page
  // comes back with the whole report.
  function setupConnectionTests() {
    if (!window.fetch || !window.TextDecoder || !window.ReadableStream) return;
    var PLAN_TUNNEL = ["resolve", "bastion_tcp", "ssh_handshake", "ssh_auth", "forward", "tls", "postgres_auth", "database", "query"];
    var PLAN_DIRECT = ["resolve", "tcp", "tls", "postgres_auth", "database", "query"];
    // The labels of conntest.go, stepLabel.
    var STEP_LABELS = {
      credential: "Fetch the token",
      resolve: "Resolve the host name", bastion_tcp: "Reach the bastion", ssh_handshake: "SSH handshake",
      ssh_auth: "SSH login", forward: "Forward to the database", tcp: "Reach the database", tls: "TLS",
      postgres_auth: "PostgreSQL login", database: "Open the database", query: "Run SELECT 1"
    };
    var meta = document.querySelector('meta[name="csrf-token"]');
    var csrf = meta ? meta.content : "";

    // planTunnel is the plan through n SSH hops (diagnose.PlanSteps): with
    // more than one, the SSH steps come once per hop, named by it.
    function planTunnel(n) {
      if (!(n > 1)) return PLAN_TUNNEL;
      var plan = [{ id: "resolve", hop: 1, of: n }];
      for (var i = 1; i <= n; i++) {
        ["bastion_tcp", "ssh_handshake", "ssh_auth"].forEach(function (id) { plan.push({ id: id, hop: i, of: n }); });
      }
      return plan.concat(PLAN_TUNNEL.slice(4));
    }
    // withToken is the plan with the credential step first, for a
    // connection whose password is a token (diagnose.PlanSteps).
    function withToken(token, plan) { return token ? ["credential"].concat(plan) : plan; }
    // stepTitle names a step as conntest.go's stepTitle does.
    function stepTitle(s) {
      var label = STEP_LABELS[s.id] || s.id;
      if (!s.hop) return label;
      return "Hop " + s.hop + " of " + s.of + (s.hop_addr ? " (" + s.hop_addr + ")" : "") + ": " + label;
    }
    // formHops are the hops after the first of the connection form.
    function formHops(form) {
      var hops = [];
      for (var i = 1; form.elements["ssh_hops." + i + ".host"]; i++) {
        var port = form.elements["ssh_hops." + i + ".port"].value.trim();
        var own = form.elements["ssh_hops." + i + ".own_key"];
        hops.push({ host: form.elements["ssh_hops." + i + ".host"].value.trim(), user: form.elements["ssh_hops." + i + ".user"].value.trim(),
          port: /^\d+$/.test(port) ? parseInt(port, 10) : (port === "" ? undefined : port), own_key: own && own.checked ? true : undefined });
      }
      return hops;
    }

    document.querySelectorAll("form[data-test]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        var button = form.querySelector("button[type=submit]");
        if (button && busy(button)) { e.preventDefault(); return; }
        var panel = panelFor(form);
        if (!panel) return; // the plain form post shows the report
        e.preventDefault();
        run(panel, "/api/v1/connections/" + encodeURIComponent(form.dataset.test) + "/test", null,
          withToken(form.dataset.token, form.dataset.tunnel ? planTunnel(parseInt(form.dataset.hops || "1", 10)) : PLAN_DIRECT),
          button, form.dataset.test);
      });
    });

    var draft = document.querySelector("button[data-test-draft]");
    if (draft) {
      draft.addEventListener("click", function (e) {
        var panel = document.getElementById("test-panel");
        if (!panel) return;
        e.preventDefault();
        if (busy(draft)) return;
        var form = draft.form;
        var tunnel = form.elements["ssh_tunnel.enabled"];
        var kind = form.elements["auth.kind"];
        run(panel, "/api/v1/connections/test", draftBody(form, draft.dataset.testDraft),
          withToken(kind && kind.value !== "password", tunnel && tunnel.checked ? planTunnel(1 + formHops(form).length) : PLAN_DIRECT), draft);
      });
    }

    // busy tells whether a test button's test is running.
    function busy(button) { return button.getAttribute("aria-disabled") === "true"; }

    // panelFor returns the panel a test button fills: the page's, or on
    // the list a panel in a row of its own under the connection's row.
    function panelFor(form) {
      var row = form.closest("tr");
      if (!row) return document.getElementById("test-panel");
      var next = row.nextElementSibling;
      if (next && next.classList.contains("test-row")) return next.querySelector(".test-panel");
      var tmpl = document.getElementById("test-panel-template");
      if (!tmpl) return null;
      var panel = tmpl.content.querySelector(".test-panel").cloneNode(true);
      var suffix = "-" + form.dataset.test;
      panel.id = "test-panel" + suffix;
      var title = panel.querySelector("h2");
      title.id = "test-title" + suffix;
      title.lastChild.textContent = "Connection test of " + form.dataset.test;
      panel.setAttribute("aria-labelledby", title.id);
      var tr = document.createElement("tr");
      tr.className = "test-row";
      var td = document.createElement("td");
      td.colSpan = row.children.length;
      td.appendChild(panel);
      tr.appendChild(td);
      row.parentNode.insertBefore(tr, row.nextSibling);
      return panel;
    }

    // draftBody is the body of POST /api/v1/connections/test for the form:
    // the connection as the form says, and, on the edit form, the saved
    // connection whose key pair and (when the field is empty) password the
    // test uses. Numbers that are not numbers go as typed, so that the API
    // names the field.
    function draftBody(form, basedOn) {
      function val(name) { var el = form.elements[name]; return el ? el.value.trim() : ""; }
      function num(name) {
        var v = val(name);
        if (v === "") return undefined;
        return /^\d+$/.test(v) ? parseInt(v, 10) : v;
      }
      var body = {
        flavor: val("flavor") || undefined, host: val("host"), port: num("port"), database: val("database"),
        user: val("user"), sslmode: val("sslmode") || undefined, schema: val("schema") || undefined, threads: num("threads"),
        require_auth: val("require_auth") || undefined
      };
      var pw = form.elements.password;
      if (pw && pw.value !== "") body.password = pw.value;
      body.role = val("role") || undefined;
      body.pooler = val("pooler") || undefined;
      body.auth = draftAuth(form, val);
      if (/^verify/.test(body.sslmode || "") && val("ssl_root_cert")) body.ssl_root_cert = val("ssl_root_cert");
      var tunnel = form.elements["ssh_tunnel.enabled"];
      if (tunnel && tunnel.checked) {
        body.ssh_tunnel = {
          host: val("ssh_tunnel.host"), port: num("ssh_tunnel.port"), user: val("ssh_tunnel.user"),
          key_type: val("ssh_tunnel.key_type") || undefined,
          keepalive_interval: val("ssh_tunnel.keepalive_interval") || undefined,
          keepalive_count_max: num("ssh_tunnel.keepalive_count_max"),
          known_host: val("ssh_tunnel.known_host") || undefined,
          auth: val("ssh_tunnel.auth") || undefined
        };
        var pc = val("ssh_tunnel.proxy_command");
        if (pc) {
          try { body.ssh_tunnel.proxy_command = /^\[/.test(pc) ? JSON.parse(pc) : pc.split(/\s+/); } catch (err) { body.ssh_tunnel.proxy_command = [pc]; }
        }
        var ha = val("ssh_tunnel.host_authorities");
        if (ha) body.ssh_tunnel.host_authorities = ha.split("\n").map(function (l) { return l.trim(); }).filter(function (l) { return l && l[0] !== "#"; });
        var more = formHops(form);
        if (more.length) {
          body.ssh_hops = [{ host: body.ssh_tunnel.host, port: body.ssh_tunnel.port, user: body.ssh_tunnel.user }].concat(more);
        }
      }
      if (basedOn) body.based_on = basedOn;
      return body;
    }

    // draftAuth is the form's password source as the API's auth object
    // (the fields of the chosen kind only, as the server's parseAuth reads
    // them), or undefined for a stored password. Empty secrets are left
    // out: on the edit form the stored ones are used.
    function draftAuth(form, val) {
      var kind = val("auth.kind");
      if (!kind || kind === "password") return undefined;
      var a = { kind: kind };
      if (kind === "command") {
        a.program = val("auth.program");
        var args = form.elements["auth.args"] ? form.elements["auth.args"].value : "";
        if (/^\[/.test(args.trim())) {
          try { a.args = JSON.parse(args); } catch (err) { a.args = undefined; }
        }
        if (!a.args) a.args = args.split(/\r?\n/).filter(function (l) { return l !== ""; });
        a.timeout = val("auth.timeout") || undefined;
        a.lifetime = val("auth.lifetime") || undefined;
      } else if (kind === "lakebase") {
        a.workspace_url = val("auth.workspace_url");
        a.client_id = val("auth.client_id");
        a.client_secret = val("auth.client_secret") || undefined;
        a.instance = val("auth.instance") || undefined;
        a.endpoint = val("auth.endpoint") || undefined;
        if (a.endpoint) a.lifetime = val("auth.lifetime") || undefined;
      } else if (kind === "alloydb-iam") {
        a.scope = val("auth.scope") || undefined;
        a.service_account_key = val("auth.service_account_key") || undefined;
      }
      return a;
    }

    function el(tag, cls, text) {
      var e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text !== undefined) e.textContent = text;
      return e;
    }

    // rich adds text to parent with `quoted` parts as code, as the
    // server's richText does; line breaks are kept by the stylesheet.
    function rich(parent, text) {
      var parts = text.split("`");
      parts.forEach(function (p, i) {
        if (i % 2 === 1 && i < parts.length - 1) parent.appendChild(el("code", "", p));
        else parent.appendChild(document.createTextNode((i % 2 === 1 ? "`" : "") + p));
      });
    }

    // fill shows a step in its row (the markup of the "teststep" template).
    function fill(li, s) {
      var status = s.status === "ok" || s.status === "failed" ? s.status : "skipped";
      li.className = "tstep tstep-" + status;
      li.dataset.step = s.id;
      if (s.hop) li.dataset.hop = String(s.hop); else delete li.dataset.hop;
      li.dataset.status = status;
      li.textContent = "";
      li.appendChild(el("span", "tstep-mark", status === "ok" ? "\u2713" : status === "failed" ? "\u2717" : "\u2013"))
        .setAttribute("aria-hidden", "true");
      var main = li.appendChild(el("div", "tstep-main"));
      var line = main.appendChild(el("div", "tstep-line"));
      line.appendChild(el("span", "tstep-name", stepTitle(s)));
      line.appendChild(document.createTextNode(" "));
      line.appendChild(el("code", "tstep-id", s.id));
      line.appendChild(el("span", "visually-hidden", ": " + (status === "ok" ? "passed" : status === "failed" ? "failed" : "skipped")));
      line.appendChild(el("span", "tstep-time", status === "skipped" ? "" : fmtDuration(s.duration_ms || 0)));
      if (s.detail) main.appendChild(el("p", "tstep-detail", s.detail));
      if (s.error) {
        var err = main.appendChild(el("p", "tstep-error"));
        err.appendChild(el("span", "visually-hidden", "Error: "));
        err.appendChild(document.createTextNode(s.error));
      }
      if (s.hint) {
        var hint = main.appendChild(el("div", "tstep-hint"));
        hint.appendChild(el("strong", "", status === "failed" ? "How to fix" : "Note"));
        rich(hint.appendChild(el("p")), s.hint);
      }
    }

    function pending(li, p, running) {
      if (typeof p === "string") p = { id: p };
      var id = p.id;
      li.className = "tstep " + (running ? "tstep-running" : "tstep-pending");
      li.dataset.step = id;
      if (p.hop) { li.dataset.hop = String(p.hop); li.dataset.of = String(p.of); } else { delete li.dataset.hop; delete li.dataset.of; }
      li.dataset.status = running ? "running" : "pending";
      li.textContent = "";
      var mark = li.appendChild(el("span", "tstep-mark"));
      mark.setAttribute("aria-hidden", "true");
      if (running) mark.appendChild(el("span", "spinner"));
      var line = li.appendChild(el("div", "tstep-main")).appendChild(el("div", "tstep-line"));
      line.appendChild(el("span", "tstep-name", stepTitle(p)));
      line.appendChild(document.createTextNode(" "));
      line.appendChild(el("code", "tstep-id", id));
      line.appendChild(el("span", "visually-hidden", running ? ": running" : ": waiting"));
    }

    function summaryText(r) {
      var passed = 0, skipped = 0, failed = null;
      r.steps.forEach(function (s) {
        if (s.status === "ok") passed++;
        else if (s.status === "failed") { if (!failed) failed = s; }
        else skipped++;
      });
      if (failed) {
        return "Failed at " + stepTitle(failed) + ": " + passed + " of " + r.steps.length +
          " steps passed in " + fmtDuration(r.duration_ms) + ".";
      }
      return "All " + passed + " steps passed in " + fmtDuration(r.duration_ms) + (skipped ? " (" + skipped + " not requested)" : "") + ".";
    }

    // facts lists what the test learned (the "testfacts" template).
    function facts(p, r) {
      p.textContent = "";
      function add(parts) {
        var span = p.appendChild(el("span"));
        parts.forEach(function (part) {
          span.appendChild(typeof part === "string" ? document.createTextNode(part) : el("code", "", part.code));
        });
      }
      var sv = r.server;
      if (sv) {
        add([sv.encrypted ? "TLS" : "Unencrypted"]);
        add(["PostgreSQL " + sv.version]);
        add(["user ", { code: sv.current_user }]);
        add(["database ", { code: sv.database }]);
        add(["round trip " + fmtDuration(sv.round_trip_ms || 0)]);
        if (sv.read_only_replica) add(["read-only replica"]);
      }
      var hk = r.host_key;
      if (hk) {
        add(["bastion host key ", { code: hk.fingerprint }, " " + (hk.state === "pinned" ? "matches the pin" :
          hk.state === "changed" ? "changed" : r.draft ? "seen (a test of the form pins nothing)" : "pinned now")]);
      }
    }

    // hostKeyState shows what the test of the saved connection name
    // learned about its bastion's host key wherever the page shows that
    // key's state (the "hostkey-state" template and the connection page),
    // so that the page agrees with the test: a first handshake pins the
    // key even when the SSH login after it fails.
    function hostKeyState(name, hk) {
      if (!hk) return;
      document.querySelectorAll("[data-host-key]").forEach(function (cell) {
        if (cell.dataset.hostKey !== name) return;
        cell.textContent = "";
        var badge;
        if (hk.state === "changed") {
          badge = el("a", "badge badge-danger", "CHANGED — approval needed");
          badge.href = "/connections/" + encodeURIComponent(name) + "#host-key-change";
          cell.appendChild(badge);
          return;
        }
        badge = cell.appendChild(el("span", "badge badge-success"));
        badge.title = hk.fingerprint;
        badge.appendChild(checkIcon());
        badge.appendChild(document.createTextNode("Pinned"));
        if (cell.tagName === "DD") {
          cell.appendChild(document.createTextNode(" "));
          cell.appendChild(el("code", "break", hk.fingerprint)).id = "host-key-fp";
        }
      });
    }

    // checkIcon is the "icon-check" template's SVG.
    function checkIcon() {
      var ns = "http://www.w3.org/2000/svg";
      var svg = document.createElementNS(ns, "svg");
      svg.setAttribute("class", "icon");
      svg.setAttribute("viewBox", "0 0 20 20");
      svg.setAttribute("width", "20");
      svg.setAttribute("height", "20");
      svg.setAttribute("aria-hidden", "true");
      svg.setAttribute("focusable", "false");
      var path = svg.appendChild(document.createElementNS(ns, "path"));
      path.setAttribute("d", "M4 10.5l4 4 8-9");
      path.setAttribute("fill", "none");
      path.setAttribute("stroke", "currentColor");
      path.setAttribute("stroke-width", "2");
      path.setAttribute("stroke-linecap", "round");
      path.setAttribute("stroke-linejoin", "round");
      return svg;
    }

    // run tests and shows the steps in panel as they arrive; name is the
    // saved connection under test ("" for a form).
    function run(panel, url, body, plan, button, name) {
      var list = panel.querySelector(".test-steps");
      var state = panel.querySelector(".test-state");
      var sum = panel.querySelector(".test-summary");
      var factsEl = panel.querySelector(".test-facts");
      var close = panel.querySelector(".test-close");
      var ended = false;

      panel.hidden = false;
      panel.classList.remove("test-passed", "test-failed", "test-error");
      panel.classList.add("test-running");
      state.textContent = "Running…";
      sum.textContent = "Testing…";
      factsEl.textContent = "";
      list.textContent = "";
      plan.forEach(function (id, i) { pending(list.appendChild(el("li")), id, i === 0); });
      close.hidden = false;
      close.onclick = function () {
        var row = panel.closest("tr.test-row");
        if (row) row.remove(); else panel.hidden = true;
        if (button) button.focus();
      };
      // The button is marked busy rather than disabled: a disabled button
      // loses the keyboard focus (to the page's start), which should stay
      // on it while it tests and after.
      if (button) {
        button.setAttribute("aria-disabled", "true");
        button.setAttribute("aria-busy", "true");
      }
      panel.scrollIntoView({ block: "nearest" });
      announce("Testing the connection");

      function row(s) {
        var sel = '[data-step="' + s.id + '"]' + (s.hop ? '[data-hop="' + s.hop + '"]' : ":not([data-hop])");
        var li = list.querySelector(sel);
        return li || list.appendChild(el("li"));
      }
      function next() {
        var li = list.querySelector(".tstep-pending");
        if (li && !list.querySelector(".tstep-running")) {
          pending(li, { id: li.dataset.step, hop: li.dataset.hop ? parseInt(li.dataset.hop, 10) : 0,
            of: li.dataset.of ? parseInt(li.dataset.of, 10) : 0 }, true);
        }
      }
      function step(s) {
        fill(row(s), s);
        next();
      }
      function report(r) {
        ended = true;
        list.querySelectorAll(".tstep-pending, .tstep-running").forEach(function (li) { li.remove(); });
        (r.steps || []).forEach(function (s) { fill(row(s), s); });
        var ok = !!r.ok;
        panel.classList.remove("test-running");
        panel.classList.add(ok ? "test-passed" : "test-failed");
        state.textContent = ok ? "Passed" : "Failed";
        sum.textContent = summaryText(r);
        facts(factsEl, r);
        if (name) hostKeyState(name, r.host_key);
        announce(sum.textContent);
      }
      // problem shows why the test could not run (an error response, the
      // network); fields are the API's field problems of the form.
      function problem(e) {
        ended = true;
        list.querySelectorAll(".tstep-pending, .tstep-running").forEach(function (li) { li.remove(); });
        panel.classList.remove("test-running");
        panel.classList.add("test-error");
        state.textContent = "Not run";
        sum.textContent = "";
        var fields = e.fields ? Object.keys(e.fields) : [];
        if (!fields.length) {
          sum.textContent = "The test could not run: " + (e.message || "unknown error") + ".";
        } else {
          sum.appendChild(document.createTextNode("Fix " + (fields.length === 1 ? "this field" : "these fields") + " first:"));
          var ul = sum.parentNode.insertBefore(el("ul", "test-fields"), factsEl);
          var said = [];
          fields.forEach(function (f) {
            // The API names the first hop ssh_hops.0 when the bastion
            // host is empty: on the form it is the bastion's field.
            var id = "f-" + f.replace(/^ssh_hops\.0\./, "ssh_tunnel.").replace(/\./g, "-");
            var label = document.querySelector('label[for="' + id + '"]');
            var name = label ? label.firstChild.textContent.trim() : f;
            var li = ul.appendChild(el("li"));
            var a = li.appendChild(el("a", "", name + ": " + e.fields[f]));
            a.href = "#" + id;
            said.push(a.textContent);
          });
          announce(sum.textContent + " " + said.join("; "));
          return;
        }
        announce(sum.textContent);
      }
      var old = panel.querySelector(".test-fields");
      if (old) old.remove();

      var headers = { Accept: "text/event-stream", "X-CSRF-Token": csrf };
      if (body) headers["Content-Type"] = "application/json";
      window.fetch(url, { method: "POST", credentials: "same-origin", headers: headers, body: body ? JSON.stringify(body) : null })
        .then(function (res) {
          var type = res.headers.get("Content-Type") || "";
          var json = type.indexOf("application/json") === 0;
          if (!res.ok) {
            if (json) return res.json().then(function (b) { problem(b.error || {}); });
            problem({ message: "pgrelay answered HTTP " + res.status });
            return;
          }
          if (json) return res.json().then(report);
          return readEvents(res, function (name, data) {
            var v = JSON.parse(data);
            if (name === "step") step(v);
            else if (name === "report") report(v);
            else if (name === "error") problem(v.error || {});
          });
        })
        .catch(function (err) { problem({ message: "pgrelay could not be reached (" + err.message + ")" }); })
        .then(function () {
          if (!ended) problem({ message: "the connection to pgrelay was lost before the test finished; try again" });
          if (button) {
            button.removeAttribute("aria-disabled");
            button.removeAttribute("aria-busy");
          }
        });
    }

    // readEvents reads server-sent events from a fetch response and calls
    // fn(event, data) for each.
    function readEvents(res, fn) {
      var buf = "";
      function dispatch(final) {
        buf = buf.replace(/\r\n/g, "\n");
        if (final) buf += "\n\n";
        var i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          var block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          var name = "message";
          var data = [];
          block.split("\n").forEach(function (line) {
            if (line.indexOf("event:") === 0) name = line.slice(6).trim();
            else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
          });
          if (data.length) fn(name, data.join("\n"));
        }
      }
      if (!res.body || !res.body.getReader) {
        return res.text().then(function (t) { buf = t; dispatch(true); });
      }
      var reader = res.body.getReader();
      var dec = new TextDecoder();
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            buf += dec.decode();
            dispatch(true);
            return;
          }
          buf += dec.decode(chunk.value, { stream: true });
          dispatch(false);
          return pump();
        });
      }
      return pump();
    }
  }
})();
