// Mina studio: every action goes through the public routes the real frontend uses (ROUTES.md).
"use strict";

(function () {
  const PASS_KEY = "mina.passId";
  const TOKEN_KEY = "mina.accessToken";
  const MAX_INSPIRATIONS = 4;
  const $ = (id) => document.getElementById(id);

  const state = {
    passId: "",
    token: "", // the Supabase access token, sent as Bearer beside the pass id (as the real frontend does)
    uploads: { product: null, logo: null, inspiration: [] },
    pendingUploads: 0,
    busy: false,
    stream: null,
    still: null, // {id, url, prompt}: the selected still, the one tweaks, animations and tools work on
    stills: [], // every still of this session, newest first
    video: null, // {id, url, prompt}
    liked: new Set(),
    session: [], // [{id, mode, status, parent}]
  };

  // ------------------------------------------------------------------ pass id

  function setPassId(id) {
    state.passId = (id || "").trim();
    if (state.passId) localStorage.setItem(PASS_KEY, state.passId);
    $("pass-id").value = state.passId;
  }

  function setToken(token, email) {
    state.token = (token || "").trim();
    if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
    else localStorage.removeItem(TOKEN_KEY);
    $("signed-in").textContent = state.token ? "Signed in" + (email ? " as " + email : "") : "";
    $("sign-out").classList.toggle("hidden", !state.token);
  }

  // Sign-in as AuthGate does it: POST /auth/shopify-sync with the Bearer token and the local pass id,
  // then adopt the pass id it answers (`pass:user:<uid>`); a token it does not accept keeps the local id.
  async function signIn(token) {
    const headers = { "Authorization": "Bearer " + token, "Content-Type": "application/json" };
    if (state.passId) headers["X-Mina-Pass-Id"] = state.passId;
    const res = await fetch("/auth/shopify-sync", { method: "POST", headers, body: "{}" });
    const data = await res.json().catch(() => ({}));
    if (!res.ok || !data.loggedIn) throw new ApiError(res.status === 200 ? 401 : res.status,
      { error: "NOT_AUTHENTICATED", message: "That access token was not accepted." });
    setToken(token, data.email);
    setPassId(data.passId || data.pass_id || res.headers.get("X-Mina-Pass-Id") || state.passId);
  }

  // ------------------------------------------------------------------ HTTP

  class ApiError extends Error {
    constructor(status, body) {
      const details = (body && body.details) || {};
      const message = details.userMessage || (body && (body.message || body.error)) || ("HTTP " + status);
      super(message);
      this.status = status;
      this.code = (body && body.error) || "";
      this.body = body;
    }
  }

  // `bare`: the body goes as given (the pass id travels in the header only, as the frontend's checkout does).
  async function api(method, path, body, bare) {
    const headers = { "Accept": "application/json" };
    if (state.passId) headers["X-Mina-Pass-Id"] = state.passId;
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(bare ? body : Object.assign({ passId: state.passId }, body));
    }
    const res = await fetch(path, init);
    const echoed = res.headers.get("X-Mina-Pass-Id");
    if (echoed && echoed !== state.passId) setPassId(echoed);
    let data = null;
    try { data = await res.json(); } catch (_e) { data = null; }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  function showError(err) {
    const box = $("error");
    box.textContent = "";
    if (!err) { box.classList.add("hidden"); return; }
    const text = document.createElement("span");
    text.textContent = err.message || String(err);
    box.appendChild(text);
    const code = err.code && err.code !== err.message ? err.code : "";
    if (code || err.status) {
      const small = document.createElement("span");
      small.className = "code";
      small.textContent = [code, err.status ? "HTTP " + err.status : ""].filter(Boolean).join(" · ");
      box.appendChild(small);
    }
    box.classList.remove("hidden");
  }

  // ------------------------------------------------------------------ credits

  // With no pass id yet, the gateway mints `pass:anon:<uuid>` and echoes it in X-Mina-Pass-Id.
  async function refreshBalance() {
    try {
      const q = state.passId ? "?passId=" + encodeURIComponent(state.passId) : "";
      const data = await api("GET", "/credits/balance" + q);
      $("balance").textContent = String(data.balance);
      const meta = data.meta || {};
      if (meta.imageCost !== undefined) {
        $("costs").textContent = "(still " + meta.imageCost + " · video " + meta.motionCost + ")";
      }
    } catch (err) {
      showError(err);
    }
  }

  // ------------------------------------------------------------------ uploads

  function readDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error || new Error("Could not read " + file.name));
      reader.readAsDataURL(file);
    });
  }

  async function uploadOne(file, kind) {
    const dataUrl = await readDataUrl(file);
    const out = await api("POST", "/api/r2/upload-signed", { dataUrl, kind, fileName: file.name });
    return out.publicUrl || out.url;
  }

  function renderThumbs(kind) {
    const box = $(kind + "-thumbs");
    box.textContent = "";
    const value = state.uploads[kind];
    const urls = Array.isArray(value) ? value : value ? [value] : [];
    for (const url of urls) {
      const img = document.createElement("img");
      img.src = url;
      img.alt = kind;
      img.dataset.url = url;
      box.appendChild(img);
    }
  }

  async function onFiles(event) {
    const input = event.target;
    const kind = input.dataset.kind;
    let files = Array.from(input.files || []);
    if (!files.length) return;
    if (kind === "inspiration" && files.length > MAX_INSPIRATIONS) {
      showError(new Error("Up to " + MAX_INSPIRATIONS + " inspiration images; using the first " + MAX_INSPIRATIONS + "."));
      files = files.slice(0, MAX_INSPIRATIONS);
    } else {
      showError(null);
    }
    state.pendingUploads += files.length;
    updateButtons();
    $("upload-status").textContent = "Uploading " + files.length + " file(s)…";
    try {
      const urls = await Promise.all(files.map((f) => uploadOne(f, kind)));
      state.uploads[kind] = kind === "inspiration" ? urls : urls[0];
      renderThumbs(kind);
      $("upload-status").textContent = "Uploaded " + kind + ".";
    } catch (err) {
      $("upload-status").textContent = "Upload failed.";
      showError(err);
    } finally {
      state.pendingUploads -= files.length;
      updateButtons();
    }
  }

  // ------------------------------------------------------------------ live run

  function resetRun(kindLabel) {
    $("scan-lines").textContent = "";
    $("final-line").textContent = "";
    $("queue").textContent = "";
    setStatus("queued");
    $("generation-id").textContent = kindLabel;
  }

  function setStatus(status) {
    const pill = $("status");
    pill.textContent = status;
    pill.className = "pill " + status;
  }

  function addScanLine(index, text) {
    const list = $("scan-lines");
    if (list.querySelector('li[data-index="' + index + '"]')) return; // a replay after reconnect
    const li = document.createElement("li");
    li.dataset.index = String(index);
    li.textContent = text;
    const after = Array.from(list.children).find((el) => Number(el.dataset.index) > index);
    list.insertBefore(li, after || null);
  }

  function parse(event) {
    try { return JSON.parse(event.data || "{}"); } catch (_e) { return {}; }
  }

  function trackSession(id, mode, parent) {
    state.session.unshift({ id, mode, status: "queued", parent: parent || "" });
    renderSession();
  }

  function sessionStatus(id, status) {
    const row = state.session.find((g) => g.id === id);
    if (row) { row.status = status; renderSession(); }
  }

  function renderSession() {
    const body = $("session-list");
    body.textContent = "";
    for (const g of state.session) {
      const tr = document.createElement("tr");
      for (const [text, cls] of [[g.id, "mono"], [g.mode, ""], [g.status, "pill " + g.status], [g.parent, "mono"]]) {
        const td = document.createElement("td");
        const span = document.createElement("span");
        span.className = cls;
        span.textContent = text;
        td.appendChild(span);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  // Follow one generation over SSE until done or error; resolves with its final view.
  function follow(id, sseUrl) {
    return new Promise((resolve, reject) => {
      if (state.stream) state.stream.close();
      const es = new EventSource(sseUrl || ("/mma/stream/" + encodeURIComponent(id)));
      state.stream = es;
      let finished = false;
      const finish = async (err) => {
        if (finished) return;
        finished = true;
        es.close();
        if (state.stream === es) state.stream = null;
        if (err) { reject(err); return; }
        try { resolve(await api("GET", "/mma/generations/" + encodeURIComponent(id))); } catch (e) { reject(e); }
      };
      es.addEventListener("scan_line", (e) => {
        const d = parse(e);
        addScanLine(Number(d.index), String(d.text || ""));
      });
      es.addEventListener("status", (e) => {
        const d = parse(e);
        if (d.status) { setStatus(d.status); sessionStatus(id, d.status); }
        const pos = d.queue_position ?? d.queuePosition;
        $("queue").textContent = pos !== undefined && pos !== null ? "Queue position: " + pos : "";
      });
      es.addEventListener("done", (e) => {
        const d = parse(e);
        setStatus(d.status || "done");
        sessionStatus(id, d.status || "done");
        $("queue").textContent = "";
        finish(null);
      });
      es.addEventListener("error", (e) => {
        if (!e.data) return; // a dropped connection: EventSource reconnects with Last-Event-ID by itself
        const d = parse(e);
        setStatus("error");
        sessionStatus(id, "error");
        const err = new Error(d.message || d.error || "The generation failed.");
        err.code = d.code || d.error || "";
        finish(err);
      });
    });
  }

  async function run(label, mode, parent, start) {
    if (state.busy) return null;
    state.busy = true;
    updateButtons();
    showError(null);
    resetRun("");
    try {
      const created = await start();
      const id = created.generation_id || created.generationId || created.id;
      $("generation-id").textContent = label + " " + id;
      trackSession(id, mode, parent);
      const view = await follow(id, created.sse_url || created.sseUrl);
      const userMessages = (view.mma_vars && view.mma_vars.userMessages) || {};
      $("final-line").textContent = userMessages.final_line || "";
      return view;
    } catch (err) {
      setStatus("error");
      showError(err);
      return null;
    } finally {
      state.busy = false;
      updateButtons();
      refreshBalance();
    }
  }

  // ------------------------------------------------------------------ results

  function showStill(view) {
    const url = view.outputs && (view.outputs.seedream_image_url || view.outputs.nanobanana_image_url);
    if (!url) { showError(new Error("The generation finished without an image.")); return; }
    addStill({ id: view.generation_id, url, prompt: view.prompt || "" });
  }

  // A new still goes first in the strip and becomes the selected one.
  function addStill(item) {
    state.stills = [item].concat(state.stills.filter((s) => s.id !== item.id));
    selectStill(item);
  }

  function selectStill(item) {
    state.still = item;
    $("still").src = item.url;
    $("still-prompt").textContent = item.prompt || "";
    $("still-card").classList.remove("hidden");
    setLiked("still-like", state.liked.has(item.id));
    renderStills();
    document.dispatchEvent(new CustomEvent("mina:still", { detail: item }));
    updateButtons();
  }

  function renderStills() {
    const box = $("stills");
    box.textContent = "";
    for (const item of state.stills) {
      const img = document.createElement("img");
      img.src = item.url;
      img.alt = item.prompt || "still";
      img.title = item.prompt || item.id;
      img.dataset.id = item.id;
      if (state.still && state.still.id === item.id) img.className = "selected";
      img.addEventListener("click", () => { if (!state.busy) selectStill(item); });
      box.appendChild(img);
    }
  }

  function showVideo(view) {
    const url = view.outputs && view.outputs.kling_video_url;
    if (!url) {
      const suggested = view.mma_vars && view.mma_vars.prompts && view.mma_vars.prompts.suggested_prompt;
      showError(new Error(suggested ? "Suggested motion: " + suggested : "The generation finished without a video."));
      return;
    }
    state.video = { id: view.generation_id, url, prompt: view.prompt || "" };
    const video = $("video");
    video.src = url;
    video.muted = true;
    video.play().catch(() => { /* autoplay may be refused; the controls still work */ });
    $("video-prompt").textContent = view.prompt || "";
    $("video-card").classList.remove("hidden");
    setLiked("video-like", state.liked.has(view.generation_id));
    updateButtons();
  }

  function setLiked(buttonId, liked) {
    const b = $(buttonId);
    b.textContent = liked ? "♥ Liked" : "♡ Like";
    b.dataset.liked = liked ? "true" : "false";
  }

  async function sendEvent(eventType, item, resultType) {
    return api("POST", "/mma/events", {
      generation_id: item.id,
      event_type: eventType,
      payload: { result_type: resultType, url: item.url, prompt: item.prompt },
    });
  }

  async function like(which) {
    const item = state[which];
    if (!item) return;
    try {
      await sendEvent("like", item, which === "still" ? "image" : "motion");
      state.liked.add(item.id);
      setLiked(which + "-like", true);
    } catch (err) { showError(err); }
  }

  async function download(which) {
    const item = state[which];
    if (!item) return;
    try {
      await sendEvent("download", item, which === "still" ? "image" : "motion");
    } catch (err) { showError(err); return; }
    // Through the gateway's /public/download (same origin, an attachment), since an asset on
    // another origin (the bucket) would ignore the download attribute and just open.
    const a = document.createElement("a");
    a.href = "/public/download?url=" + encodeURIComponent(item.url);
    a.download = "mina-" + item.id + (which === "still" ? ".png" : ".mp4");
    a.rel = "noopener";
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  // ------------------------------------------------------------------ actions

  async function createStill() {
    const u = state.uploads;
    const view = await run("still", "still", "", () => api("POST", "/mma/still/create", {
      assets: {
        product_image_url: u.product || undefined,
        logo_image_url: u.logo || undefined,
        inspiration_image_urls: u.inspiration,
      },
      inputs: { brief: $("brief").value.trim(), style: $("style").value.trim() || undefined },
    }));
    if (view) showStill(view);
  }

  async function tweakStill() {
    if (!state.still) return;
    const parent = state.still.id;
    const feedback = $("still-feedback").value.trim();
    if (!feedback) { showError(new Error("Write what to change first.")); return; }
    const view = await run("still tweak", "still", parent, () => api(
      "POST", "/mma/still/" + encodeURIComponent(parent) + "/tweak", { feedback: { still_feedback: feedback } }));
    if (view) showStill(view);
  }

  async function animate() {
    if (!state.still) return;
    const typeForMe = $("type-for-me").checked;
    const brief = $("motion-brief").value.trim();
    if (!typeForMe && !brief) { showError(new Error("Write a motion brief or tick “Type for me”.")); return; }
    const still = state.still;
    const view = await run("video", "video", still.id, () => api("POST", "/mma/video/animate", {
      // the still generation id makes the video its child (parent chain); the URL is the start frame
      assets: { input_still_generation_id: still.id, start_image_url: still.url },
      inputs: { motion_user_brief: brief, type_for_me: typeForMe },
      mode: { type_for_me: typeForMe },
    }));
    if (view) showVideo(view);
  }

  async function tweakVideo() {
    if (!state.video) return;
    const parent = state.video.id;
    const feedback = $("motion-feedback").value.trim();
    if (!feedback) { showError(new Error("Write what to change first.")); return; }
    const view = await run("video tweak", "video", parent, () => api(
      "POST", "/mma/video/" + encodeURIComponent(parent) + "/tweak", { feedback: { motion_feedback: feedback } }));
    if (view) showVideo(view);
  }

  function updateButtons() {
    const blocked = state.busy || state.pendingUploads > 0 || !state.passId;
    $("create").disabled = blocked;
    $("still-tweak").disabled = blocked || !state.still;
    $("animate").disabled = blocked || !state.still;
    $("video-tweak").disabled = blocked || !state.video;
    $("buy").disabled = !state.passId || state.buying;
    document.dispatchEvent(new CustomEvent("mina:buttons", { detail: { blocked } }));
  }

  // ------------------------------------------------------------------ buying matcha

  // POST /api/checkout/create {qty}: a Shopify draft order carrying this pass id, so the paid order
  // credits this customer; its invoice opens in a new tab (and stays linked here if a popup is refused).
  function buyStatus(text, link) {
    const box = $("buy-status");
    box.textContent = text;
    if (link) {
      const a = document.createElement("a");
      a.href = link;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = "Open the checkout";
      a.dataset.testid = "buy-link";
      box.appendChild(document.createTextNode(" "));
      box.appendChild(a);
    }
    box.classList.toggle("hidden", !text);
  }

  async function buy() {
    const qty = Number($("buy-qty").value) || 1;
    state.buying = true;
    updateButtons();
    showError(null);
    buyStatus("Preparing your checkout…");
    try {
      const data = await api("POST", "/api/checkout/create", { qty }, true);
      if (!data || !data.ok || !data.checkoutUrl) throw new Error("The checkout could not be prepared.");
      const tab = window.open(data.checkoutUrl, "_blank");
      if (tab) { try { tab.opener = null; } catch (_e) { /* another origin already */ } }
      buyStatus("Complete your purchase on Shopify, then come back here: your matcha arrive with the paid order.",
        data.checkoutUrl);
    } catch (err) {
      buyStatus("");
      showError(err);
    } finally {
      state.buying = false;
      updateButtons();
    }
  }

  // Shopify's thank-you page sends the customer back with ?checkout=complete.
  function checkoutReturn() {
    const params = new URLSearchParams(location.search);
    if (params.get("checkout") !== "complete") return false;
    params.delete("checkout");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
    buyStatus("Payment received — your matcha are on the way!");
    return true;
  }

  // ------------------------------------------------------------------ boot

  // Uncaught page errors go to the ops error feed (🖥️ FRONTEND_CRASH), as the real frontend does.
  let reported = 0;
  function reportCrash(message, stack) {
    if (reported++ >= 5) return; // never a loop of reports
    fetch("/api/log-error", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Mina-Pass-Id": state.passId },
      body: JSON.stringify({ code: "FRONTEND_CRASH", message: String(message).slice(0, 2000), stack: stack || "",
        url: location.pathname, userAgent: navigator.userAgent, extra: { page: "studio" } }),
    }).catch(() => { /* reporting must never throw */ });
  }

  function boot() {
    window.addEventListener("error", (e) => reportCrash(e.message, e.error && e.error.stack));
    window.addEventListener("unhandledrejection", (e) => reportCrash(
      (e.reason && e.reason.message) || e.reason, e.reason && e.reason.stack));
    setPassId(localStorage.getItem(PASS_KEY) || "");
    setToken(localStorage.getItem(TOKEN_KEY) || "");
    $("sign-in").addEventListener("click", async () => {
      const token = $("access-token").value.trim();
      if (!token) { showError(new Error("Paste an access token first.")); return; }
      showError(null);
      try {
        await signIn(token);
        $("access-token").value = "";
      } catch (err) {
        showError(err);
        return;
      }
      await refreshBalance();
      updateButtons();
    });
    $("sign-out").addEventListener("click", async () => {
      setToken("");
      setPassId(""); // a customer's pass id is not kept without their token: a fresh anon one is minted
      showError(null);
      await refreshBalance();
      updateButtons();
    });
    $("pass-use").addEventListener("click", async () => {
      const typed = $("pass-id").value.trim();
      if (!typed.startsWith("pass:")) { showError(new Error("A pass id starts with “pass:”.")); return; }
      showError(null);
      setPassId(typed);
      await refreshBalance();
      updateButtons();
    });
    $("pass-new").addEventListener("click", async () => {
      setPassId("");
      showError(null);
      await refreshBalance();
      updateButtons();
    });
    for (const id of ["product-file", "logo-file", "inspiration-file"]) $(id).addEventListener("change", onFiles);
    $("create").addEventListener("click", createStill);
    $("still-tweak").addEventListener("click", tweakStill);
    $("animate").addEventListener("click", animate);
    $("video-tweak").addEventListener("click", tweakVideo);
    $("still-like").addEventListener("click", () => like("still"));
    $("video-like").addEventListener("click", () => like("video"));
    $("still-download").addEventListener("click", () => download("still"));
    $("video-download").addEventListener("click", () => download("video"));
    $("type-for-me").addEventListener("change", (e) => { $("motion-brief").disabled = e.target.checked; });
    $("buy").addEventListener("click", buy);
    checkoutReturn();
    updateButtons();
    refreshBalance().then(() => {
      updateButtons();
      document.body.dataset.ready = "true";
    });
  }

  // What studio-tools.js (the fingertips tools) works with.
  window.MinaStudio = {
    state, api, showError, updateButtons, refreshBalance, addStill, trackSession, sessionStatus,
  };

  document.addEventListener("DOMContentLoaded", boot);
})();
