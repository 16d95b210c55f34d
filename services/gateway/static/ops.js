// Mina ops console: reads MEGA through the admin-token routes; the token stays in sessionStorage.
"use strict";

(function () {
  const TOKEN_KEY = "mina.adminToken";
  const $ = (id) => document.getElementById(id);

  // MMA.md's error categories and their emoji.
  const CATEGORIES = [
    ["API_ERROR", "🔥"], ["FRONTEND_CRASH", "🖥️"], ["AUTH_ERROR", "🚫"], ["VALIDATION_ERROR", "⚠️"],
    ["TIMEOUT", "⏱️"], ["PROVIDER_ERROR", "🛰️"], ["UNHANDLED_REJECTION", "🧵"], ["UNCAUGHT_EXCEPTION", "💥"],
    ["CONFIG_ERROR", "🎛️"], ["GPT_SCHEMA_ERROR", "🧠"], ["INVALID_MESSAGE", "💥"], ["POISON_MESSAGE", "☠️"],
  ];

  const state = { tab: "generations", category: "", selected: "", config: {} };

  // ------------------------------------------------------------------ helpers

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === undefined || cell === null ? "" : String(cell);
      tr.appendChild(td);
    }
    return tr;
  }

  function fill(tbodyId, rows, emptyText, columns) {
    const body = $(tbodyId);
    body.textContent = "";
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = el("td", emptyText, "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const r of rows) body.appendChild(r);
  }

  function pill(text) { return el("span", text || "–", "pill " + (text || "")); }
  function mono(text) { return el("span", text || "", "mono"); }
  function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }

  function payloadViewer(value, label) {
    const details = el("details", null, "payload");
    details.appendChild(el("summary", label || "JSON"));
    details.appendChild(el("pre", JSON.stringify(value, null, 2)));
    return details;
  }

  function showError(err) {
    const box = $("error");
    if (!err) { box.classList.add("hidden"); box.textContent = ""; return; }
    box.textContent = err.message || String(err);
    box.classList.remove("hidden");
  }

  // ------------------------------------------------------------------ HTTP

  async function api(method, path, body) {
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    const headers = { "Accept": "application/json", "Authorization": "Bearer " + token };
    const init = { method, headers };
    if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    const res = await fetch(path, init);
    let data = null;
    try { data = await res.json(); } catch (_e) { data = null; }
    if (res.status === 401 || res.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      lock("That token was refused (" + res.status + "). Enter the admin token.");
      throw new Error("Unauthorized");
    }
    if (!res.ok) throw new Error((data && (data.message || data.error)) || ("HTTP " + res.status));
    return data;
  }

  async function guarded(fn) {
    try { showError(null); await fn(); } catch (err) { if (err.message !== "Unauthorized") showError(err); }
  }

  // ------------------------------------------------------------------ gate and tabs

  function lock(message) {
    $("gate").classList.remove("hidden");
    $("panels").classList.add("hidden");
    $("tabs").classList.add("hidden");
    $("sign-out").classList.add("hidden");
    if (message) showError(new Error(message));
  }

  function unlock() {
    $("gate").classList.add("hidden");
    $("panels").classList.remove("hidden");
    $("tabs").classList.remove("hidden");
    $("sign-out").classList.remove("hidden");
    showTab(state.tab);
  }

  function showTab(tab) {
    state.tab = tab;
    for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
    for (const p of document.querySelectorAll(".panel")) p.classList.toggle("hidden", p.dataset.panel !== tab);
    const loaders = { generations: loadGenerations, errors: loadErrors, dead: loadDeadLetters,
      reconcile: loadReconcile, counts: loadCounts, config: loadConfig };
    guarded(loaders[tab]);
  }

  // ------------------------------------------------------------------ generations

  async function loadGenerations() {
    const passId = $("gen-filter").value.trim();
    const q = passId ? "?pass_id=" + encodeURIComponent(passId) : "";
    const data = await api("GET", "/ops/api/generations" + q);
    const rows = data.generations.map((g) => {
      const tr = row([when(g.created_at), mono(g.generation_id), g.mode, pill(g.status), mono(g.pass_id),
        mono(g.parent_id)]);
      tr.className = "clickable" + (g.generation_id === state.selected ? " selected" : "");
      tr.dataset.generationId = g.generation_id;
      tr.addEventListener("click", () => guarded(() => openGeneration(g.generation_id)));
      return tr;
    });
    fill("gen-list", rows, "No generations yet.", 6);
  }

  function stepError(step) {
    const err = step.payload && step.payload.error;
    if (!err) return "";
    return [err.error_code, err.message].filter(Boolean).join(": ") || JSON.stringify(err);
  }

  function stepDuration(step) {
    const timing = step.payload && step.payload.timing;
    const ms = step.latency_ms ?? (timing && timing.duration_ms);
    return ms === undefined || ms === null ? "" : ms + " ms";
  }

  async function openGeneration(id) {
    state.selected = id;
    for (const tr of document.querySelectorAll("#gen-list tr")) tr.classList.toggle("selected", tr.dataset.generationId === id);
    const data = await api("GET", "/ops/api/generations/" + encodeURIComponent(id));
    const g = data.generation;
    $("detail-id").textContent = g.generation_id;
    const kv = $("detail-kv");
    kv.textContent = "";
    const fields = [["Pass id", g.pass_id], ["Mode", g.mode], ["Status", g.status], ["mg_status", g.mg_status],
      ["Provider / model", [g.provider, g.model].filter(Boolean).join(" / ")], ["Parent", g.parent_id],
      ["Prompt", g.prompt], ["Output", g.output_url], ["Error", g.error], ["Created", when(g.created_at)]];
    for (const [k, v] of fields) { kv.appendChild(el("dt", k)); kv.appendChild(el("dd", v || "–")); }
    kv.appendChild(el("dt", "Variables"));
    const dd = el("dd");
    dd.appendChild(payloadViewer(g.vars, "mg_mma_vars"));
    kv.appendChild(dd);

    fill("steps", data.steps.map((s) => row([
      s.step_no, el("span", s.step_type, "mono nowrap"), [s.provider, s.model].filter(Boolean).join(" / "), stepDuration(s),
      pill(s.status), stepError(s), payloadViewer(s.payload, "payload"),
    ])), "No steps recorded.", 7);
    fill("chain", data.chain.map((c) => {
      const tr = row([mono(c.generation_id), c.mode, pill(c.status), when(c.created_at)]);
      tr.className = "clickable";
      tr.addEventListener("click", () => guarded(() => openGeneration(c.generation_id)));
      return tr;
    }), "No parent: this generation started the chain.", 4);
    fill("credits", data.credits.map((t) => row([
      mono(t.txn_id), el("strong", (t.delta > 0 ? "+" : "") + t.delta), t.reason, t.source,
      mono([t.ref_type, t.ref_id].filter(Boolean).join(":")), when(t.created_at),
    ])), "No credit rows.", 6);
    fill("detail-errors", data.errors.map(errorCells), "No errors.", 6);
    $("gen-detail").classList.remove("hidden");
  }

  function errorCells(e) {
    const d = e.detail || {};
    return row([d.emoji || "", d.category || "", mono(d.error_code), d.message || "", mono(d.step_type),
      when(e.created_at)]);
  }

  // ------------------------------------------------------------------ errors

  function renderFilters() {
    const box = $("error-filters");
    box.textContent = "";
    for (const [cat, emoji] of [["", "✳️"], ...CATEGORIES]) {
      const b = el("button", emoji + " " + (cat || "All"));
      b.type = "button";
      b.dataset.category = cat;
      b.classList.toggle("active", cat === state.category);
      b.addEventListener("click", () => { state.category = cat; renderFilters(); guarded(loadErrors); });
      box.appendChild(b);
    }
  }

  async function loadErrors() {
    renderFilters();
    const q = state.category ? "?category=" + encodeURIComponent(state.category) : "";
    const data = await api("GET", "/ops/api/errors" + q);
    fill("error-list", data.errors.map((e) => {
      const d = e.detail || {};
      const gen = mono(d.generation_id);
      const tr = row([d.emoji || "", d.category || e.level, e.level, mono(d.error_code), d.message || "", gen,
        mono(d.step_type), when(e.created_at)]);
      if (d.generation_id) {
        tr.className = "clickable";
        tr.addEventListener("click", () => { showTab("generations"); guarded(() => openGeneration(d.generation_id)); });
      }
      return tr;
    }), state.category ? "No " + state.category + " errors." : "No errors.", 8);
  }

  // ------------------------------------------------------------------ dead letters

  async function loadDeadLetters() {
    const data = await api("GET", "/ops/api/dead-letters");
    const count = $("dead-count");
    count.textContent = String(data.waiting);
    count.className = "pill " + (data.waiting ? "bad" : "ok");
    $("dead-by").textContent = Object.entries(data.by_consumer).map(([c, n]) => c + ": " + n).join(" · ");
    fill("dead-list", data.dead_letters.map((d) => row([
      when(d.at), mono(d.consumer), mono(d.subject), d.type || "", d.deliveries, d.reason,
      payloadViewer({ seq: d.seq, stream: d.stream, stream_seq: d.stream_seq, record_id: d.record_id, data: d.data },
        "message"),
    ])), "Nothing waits: every message was taken.", 7);
  }

  // ------------------------------------------------------------------ reconciliation

  async function loadReconcile() {
    const data = await api("GET", "/ops/api/reconcile");
    const ok = $("rec-ok");
    ok.textContent = data.ok ? "balanced" : "breaches";
    ok.className = "pill " + (data.ok ? "ok" : "bad");
    const t = data.totals || {};
    $("rec-totals").textContent = "Σ balances " + t.sum_balances + " · Σ deltas " + t.sum_deltas + " · " +
      t.customers + " customers · " + t.generations + " generations";
    fill("rec-checks", Object.entries(data.checks).map(([name, n]) => row([mono(name), pill(String(n))])), "", 2);
    for (const tr of $("rec-checks").children) {
      const p = tr.querySelector(".pill");
      if (p) p.className = "pill " + (p.textContent === "0" ? "ok" : "bad");
    }
    fill("rec-customers", data.customers.map((c) => row([
      mono(c.pass_id), c.balance, c.sum_deltas, el("span", c.ok ? "ok" : "mismatch", "pill " + (c.ok ? "ok" : "bad")),
    ])), "No customers.", 4);
  }

  // ------------------------------------------------------------------ counts

  async function loadCounts() {
    const data = await api("GET", "/ops/api/summary");
    $("count-totals").textContent = data.total_customers + " customers · " + data.total_generations + " generations";
    const types = [...new Set(data.counts_by_day.map((r) => r.record_type))].sort();
    const days = [...new Set(data.counts_by_day.map((r) => String(r.day).slice(0, 10)))].sort().reverse();
    const table = $("counts");
    table.textContent = "";
    const head = document.createElement("thead");
    head.appendChild(row(["Day", ...types]));
    for (const td of head.querySelectorAll("td")) { const th = el("th", td.textContent); td.replaceWith(th); }
    table.appendChild(head);
    const body = document.createElement("tbody");
    for (const day of days) {
      body.appendChild(row([day, ...types.map((t) => {
        const hit = data.counts_by_day.find((r) => String(r.day).slice(0, 10) === day && r.record_type === t);
        return hit ? hit.count : 0;
      })]));
    }
    if (!days.length) body.appendChild(row(["No rows yet."]));
    table.appendChild(body);
  }

  // ------------------------------------------------------------------ config

  function editable(value) {
    const copy = Object.assign({}, value);
    delete copy.version;
    return copy;
  }

  async function loadConfig() {
    const data = await api("GET", "/ops/api/config");
    state.config = {};
    const list = $("config-keys");
    list.textContent = "";
    for (const e of data.entries) {
      state.config[e.key] = e;
      const opt = document.createElement("option");
      opt.value = e.key;
      list.appendChild(opt);
    }
    fill("config-list", data.entries.map((e) => row([
      mono(e.key), "v" + e.version, mono(e.id), e.value.enabled === false ? "no" : "yes", payloadViewer(e.value, "JSON"),
    ])), "No config rows.", 5);
  }

  function onConfigKey() {
    const entry = state.config[$("config-key").value.trim()];
    if (entry && !$("config-value").value.trim()) {
      $("config-value").value = JSON.stringify(editable(entry.value), null, 2);
    }
  }

  async function submitConfig(event) {
    event.preventDefault();
    const key = $("config-key").value.trim();
    let value;
    try {
      value = JSON.parse($("config-value").value);
    } catch (err) {
      showError(new Error("The value is not valid JSON: " + err.message));
      return;
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) {
      showError(new Error("The value must be a JSON object."));
      return;
    }
    await guarded(async () => {
      const out = await api("POST", "/ops/api/config", { key, value });
      $("config-result").textContent = "Added " + out.entry.id;
      await loadConfig();
    });
  }

  // ------------------------------------------------------------------ boot

  function boot() {
    $("token-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token").value = "";
      try {
        await api("GET", "/ops/api/summary");
        showError(null);
        unlock();
      } catch (err) {
        if (err.message !== "Unauthorized") showError(err);
      }
    });
    $("sign-out").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); lock(""); });
    for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
    $("gen-refresh").addEventListener("click", () => guarded(loadGenerations));
    $("gen-filter").addEventListener("change", () => guarded(loadGenerations));
    $("rec-refresh").addEventListener("click", () => guarded(loadReconcile));
    $("dead-refresh").addEventListener("click", () => guarded(loadDeadLetters));
    $("config-key").addEventListener("change", onConfigKey);
    $("config-form").addEventListener("submit", submitConfig);
    if (sessionStorage.getItem(TOKEN_KEY)) unlock(); else lock("");
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", boot);
})();
