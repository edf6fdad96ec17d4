// The run page, live: a websocket to /ws/runs/<code>/ that sends the run's whole
// state on connect and after each change. Everything from the server is written
// with textContent (LLM output is never parsed as HTML). Updates are coalesced:
// the latest state is rendered once per animation frame. The socket reconnects by
// itself with backoff and asks for the current state when it is back.
(function () {
  "use strict";

  const root = document.getElementById("run-live");
  if (!root) return;

  let state = null;
  let receivedAt = Date.now();
  let pending = null;
  let frame = 0;
  let socket = null;
  let retryDelay = 500;
  let everConnected = false;

  function seconds(total) {
    if (total === null || total === undefined || isNaN(total)) return "-";
    total = Math.max(0, Math.round(total));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(s).padStart(2, "0") + "s";
    return s + "s";
  }

  // Counts with thousands separators, as the server writes them: 1,100,000.
  function count(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : String(n);
  }

  function bind(name, text) {
    root.querySelectorAll('[data-bind="' + name + '"]').forEach(function (el) {
      el.textContent = text;
    });
  }

  function show(name, visible) {
    root.querySelectorAll('[data-show="' + name + '"]').forEach(function (el) {
      el.hidden = !visible;
    });
  }

  function ticking() {
    // elapsed and time left move between messages while the run is active
    if (!state) return;
    const since = state.active ? (Date.now() - receivedAt) / 1000 : 0;
    bind("elapsed", seconds(state.elapsed_seconds + since));
    if (state.eta_seconds === null || state.eta_seconds === undefined) {
      bind("eta", state.active ? "estimating…" : "none (the run is not going)");
    } else {
      bind("eta", "about " + seconds(Math.max(0, state.eta_seconds - since)));
    }
  }

  function renderSteps(steps, hasCost) {
    steps.forEach(function (st) {
      const row = root.querySelector('tr[data-step="' + st.index + '"]');
      if (!row) return;
      const cell = function (col, text) {
        const el = row.querySelector('[data-col="' + col + '"]');
        if (el) el.textContent = text;
      };
      ["pending", "running", "done", "failed"].forEach(function (k) {
        cell(k, count(st.counts[k] || 0));
      });
      cell("calls_per_second", String(st.calls_per_second));
      cell("tokens", count(st.tokens_in) + " / " + count(st.tokens_out));
      cell("ratio", count(st.finished) + " / " + count(st.expected));
      // money comes formatted by the server (runner.spec.money.fmt_dollars)
      if (hasCost && st.cost_text !== undefined) cell("cost", st.cost_text);
      const bar = row.querySelector('[data-col="progress"]');
      if (bar) {
        bar.max = Math.max(1, st.expected);
        bar.value = st.finished;
      }
    });
  }

  // The pipeline drawn (designer/graph.html): how far each step is, what it has made.
  function renderGraph(steps) {
    steps.forEach(function (st) {
      root.querySelectorAll('[data-graph-step="' + st.index + '"] [data-graph-bind="words"]').forEach(function (el) {
        el.textContent = st.words;
      });
      root.querySelectorAll('[data-graph-made="' + st.index + '"]').forEach(function (el) {
        el.textContent = st.made_words;
      });
    });
  }

  function renderFailures(failures) {
    const list = document.getElementById("failures");
    if (!list) return;
    const base = root.getAttribute("data-tasks-url") || "";
    const items = failures.map(function (f) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = base + "?" + new URLSearchParams({ status: "failed", reason: f.reason }).toString();
      const n = document.createElement("strong");
      n.textContent = String(f.n);
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = f.reason + (f.cut ? "…" : "");
      a.append(n, " \u00d7 ", reason);
      li.append(a);
      return li;
    });
    list.replaceChildren.apply(list, items);
    const none = document.getElementById("no-failures");
    if (none) none.hidden = failures.length > 0;
  }

  // The quality block (runner.events.quality): duplicates set aside and the calls they
  // saved, diversity of each field of the records, judges' scores. Built with textContent.
  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function pct(x) {
    return x === null || x === undefined ? "-" : (Math.round(x * 1000) / 10).toString() + "%";
  }

  function num(x) {
    return x === null || x === undefined ? "-" : Number(x).toLocaleString();
  }

  function table(headers, rows, id) {
    const t = el("table", null, "table quality-table");
    if (id) t.id = id;
    const head = el("tr");
    headers.forEach(function (h) { head.append(el("th", h)); });
    t.append(el("thead"));
    t.tHead.append(head);
    const body = el("tbody");
    rows.forEach(function (cells) {
      const tr = el("tr");
      cells.forEach(function (c, i) { tr.append(el("td", c, i ? "num" : "")); });
      body.append(tr);
    });
    t.append(body);
    return t;
  }

  // Per-reviewer progress of an assigned review (runner.events.reviews).
  function renderReviewers(list) {
    const body = document.querySelector("#reviewers tbody");
    if (!body) return;
    show("reviewers", list.length > 0);
    const rows = list.map(function (p) {
      const tr = el("tr");
      tr.setAttribute("data-reviewer", p.name);
      tr.append(el("td", p.name));
      [["assigned", p.assigned], ["reviewed", p.reviewed], ["per_minute", p.per_minute === null ? "-" : p.per_minute]].forEach(function (c) {
        const td = el("td", c[1] === "-" ? "-" : num(c[1]), "num");
        td.setAttribute("data-col", c[0]);
        tr.append(td);
      });
      return tr;
    });
    body.replaceChildren.apply(body, rows);
  }

  function renderQuality(q) {
    const box = document.getElementById("quality");
    if (!box || !q) return;
    const parts = [];
    (q.dedup || []).forEach(function (d) {
      parts.push(el("p", "Step " + d.step + " set aside " + num(d.duplicates) + " duplicate(s) and " +
        num(d.near_duplicates) + " near duplicate(s) of " + d.field + ", saving about " +
        num(d.calls_saved) + " call(s).", "dedup-line"));
    });
    const fields = Object.keys(q.fields || {});
    if (fields.length) {
      parts.push(el("h3", "Diversity of the records" + (q.sampled ? " (" + num(q.sampled) + " looked at)" : "")));
      const embedded = fields.some(function (k) { return q.fields[k].embedding_diversity !== undefined; });
      const headers = ["Field", "Distinct words (distinct-1)", "Distinct word pairs (distinct-2)", "Duplicates", "Near duplicates", "Length: mean (shortest-longest)"];
      if (embedded) headers.push("Embedding diversity (0 same, 1 unrelated)");
      parts.push(table(
        headers,
        fields.map(function (k) {
          const f = q.fields[k];
          if (!f.records) return headers.map(function (_, i) { return i ? "-" : k; });
          const row = [k, pct(f.distinct_1), pct(f.distinct_2), num(f.duplicates), num(f.near_duplicates),
            num(f.length_mean) + " (" + num(f.length_min) + "-" + num(f.length_max) + ")"];
          if (embedded) row.push(f.embedding_diversity === undefined || f.embedding_diversity === null ? "-" : String(f.embedding_diversity));
          return row;
        }),
        "quality-fields"
      ));
      if (q.embeddings && q.embeddings.error) parts.push(el("p", "Embedding diversity not measured: " + q.embeddings.error, "muted"));
    }
    const judged = Object.keys(q.judges || {}).filter(function (k) { return q.judges[k].judged !== undefined; });
    if (judged.length) {
      parts.push(el("h3", "Judges"));
      parts.push(table(
        ["Score", "Mean (1-5) or pass rate", "Passed", "Filtered out"],
        judged.map(function (k) {
          const j = q.judges[k];
          const mean = j.mean !== null && j.mean !== undefined ? String(j.mean) : pct(j.pass_rate);
          return [k + " (" + j.step + ")", mean, num(j.passed), num(j.filtered)];
        }),
        "quality-judges"
      ));
    }
    if (!parts.length) parts.push(el("p", "No records to measure yet.", "muted"));
    box.replaceChildren.apply(box, parts);
  }

  function render() {
    frame = 0;
    if (!pending) return;
    state = pending;
    pending = null;
    receivedAt = Date.now();
    const s = state;
    const hasCost = s.cost_text !== undefined && s.cost_text !== null;
    bind("status", s.status_label);
    root.querySelectorAll('[data-bind="status"]').forEach(function (el) {
      el.className = "badge status-" + s.status;
    });
    [
      "finished_tasks",
      "expected_tasks",
      "calls_per_second",
      "retrying",
      "tokens_in",
      "tokens_out",
      "records",
      "reviewed",
      "failed",
    ].forEach(function (k) {
      if (s[k] !== undefined && s[k] !== null) bind(k, count(s[k]));
    });
    if (s.set_aside) {
      ["filtered", "duplicates", "near_duplicates"].forEach(function (k) {
        bind(k, count(s.set_aside[k]));
      });
    }
    bind("percent", (Math.round(s.progress * 1000) / 10).toString() + "%");
    const paused = s.status === "paused";
    if (hasCost) {
      bind("cost", s.cost_text);
      bind("spent", s.cost_text);
    }
    show("cost", hasCost);
    show("active", s.active);
    const ended = s.status === "completed" || s.status === "completed_with_failures";
    show("resumable", !s.active && !ended && !paused);
    // a run paused on its budget: its message and the raise-budget form
    bind("paused_message", paused ? s.error || "Paused: raise the budget to continue." : "");
    show("paused", paused);
    show("failed", s.failed > 0);
    const bar = document.getElementById("run-progress");
    if (bar) {
      bar.max = Math.max(1, s.expected_tasks);
      bar.value = s.finished_tasks;
      bar.className = "bar-" + s.status;
    }
    root.querySelectorAll('[data-bind="error"]').forEach(function (el) {
      el.textContent = s.error || "";
      el.hidden = !s.error || paused;
    });
    if (s.steps) renderSteps(s.steps, hasCost);
    if (s.steps) renderGraph(s.steps);
    if (s.chain !== undefined) bind("chain", s.chain);
    if (s.failures) renderFailures(s.failures);
    if (s.quality) renderQuality(s.quality);
    if (s.reviewers) renderReviewers(s.reviewers);
    ticking();
    root.setAttribute("data-status", s.status);
    // other scripts of the page (review.js) follow the state too
    document.dispatchEvent(new CustomEvent("run:state", { detail: s }));
  }

  function receive(next) {
    pending = next;
    if (!frame) frame = window.requestAnimationFrame(render);
  }

  function setConn(text, kind) {
    const el = document.getElementById("conn");
    if (!el) return;
    el.textContent = text;
    el.setAttribute("data-conn", kind);
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + root.getAttribute("data-ws-path"));
    socket.addEventListener("open", function () {
      setConn("live", "open");
      retryDelay = 500;
      if (everConnected) socket.send(JSON.stringify({ type: "state" }));
      everConnected = true;
    });
    socket.addEventListener("message", function (event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (message && message.type === "state" && message.state) receive(message.state);
    });
    socket.addEventListener("close", function (event) {
      socket = null;
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) {
        setConn("not allowed: log in again", "closed");
        return;
      }
      setConn("reconnecting…", "retry");
      const delay = retryDelay;
      retryDelay = Math.min(retryDelay * 2, 15000);
      window.setTimeout(connect, delay + Math.random() * 250);
    });
  }

  const initial = document.getElementById("run-state");
  if (initial) {
    try {
      state = JSON.parse(initial.textContent);
    } catch (e) {
      state = null;
    }
  }
  if (state && state.quality) renderQuality(state.quality);
  ticking();
  window.setInterval(ticking, 1000);
  connect();
})();
