// Mina studio, fingertips: Expand, Draw (a prompt and a mask) and Erase (a mask) on the selected still,
// through POST /fingertips/generate {modelKey, inputs, passId} as the frontend sends it (UPSTREAM.md §1.2).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const RATIOS = [["9:16", 9 / 16], ["16:9", 16 / 9], ["3:4", 3 / 4], ["4:3", 4 / 3], ["2:3", 2 / 3],
    ["3:2", 3 / 2], ["1:1", 1]];
  const OPPOSITE = { "9:16": "16:9", "16:9": "9:16", "3:4": "4:3", "4:3": "3:4", "2:3": "3:2", "3:2": "2:3" };
  const POLL_MS = 2000;
  const POLL_LIMIT_MS = 180000;
  const LABELS = { expand: "Expand", flux_fill: "Draw", eraser: "Erase" };

  const tool = {
    mode: null, // null | "flux_fill" | "eraser": a mask tool waiting for its selection
    paths: [], // closed lasso paths, in the image's natural pixels: [[x, y], ...]
    current: null, // the path being drawn
    running: false,
  };

  let studio = null;

  // ------------------------------------------------------------------ the image's size

  function naturalSize() {
    const img = $("still");
    if (img.naturalWidth && img.naturalHeight) return { width: img.naturalWidth, height: img.naturalHeight };
    return { width: img.clientWidth || 1, height: img.clientHeight || 1 }; // the image failed: the shown size
  }

  // The frontend's rule: snap the still's ratio (tolerance 0.08) and ask for the other orientation.
  function expandRatio() {
    const { width, height } = naturalSize();
    const ratio = width / height;
    let best = null;
    for (const [name, value] of RATIOS) {
      const off = Math.abs(ratio - value);
      if (off <= 0.08 && (!best || off < best.off)) best = { name, off };
    }
    return (best && OPPOSITE[best.name]) || "4:3";
  }

  // ------------------------------------------------------------------ drawing the mask

  function canvas() { return $("mask-canvas"); }

  function fitCanvas() {
    const img = $("still");
    const c = canvas();
    c.width = Math.max(1, img.clientWidth);
    c.height = Math.max(1, img.clientHeight);
    c.style.width = img.clientWidth + "px";
    c.style.height = img.clientHeight + "px";
    redraw();
  }

  function scale() {
    const { width, height } = naturalSize();
    const c = canvas();
    return { x: width / c.width, y: height / c.height };
  }

  function pointOf(event) {
    const rect = canvas().getBoundingClientRect();
    const k = scale();
    return [(event.clientX - rect.left) * k.x, (event.clientY - rect.top) * k.y];
  }

  function trace(ctx, path, k) {
    ctx.beginPath();
    path.forEach(([x, y], i) => (i ? ctx.lineTo(x / k.x, y / k.y) : ctx.moveTo(x / k.x, y / k.y)));
  }

  function redraw() {
    const c = canvas();
    const ctx = c.getContext("2d");
    const k = scale();
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#3f6b4f";
    ctx.fillStyle = "rgba(255, 255, 255, 0.45)";
    for (const path of tool.paths) {
      trace(ctx, path, k);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
    }
    if (tool.current && tool.current.length > 1) {
      trace(ctx, tool.current, k);
      ctx.stroke();
    }
  }

  function onDown(event) {
    if (!tool.mode || tool.running) return;
    event.preventDefault();
    canvas().setPointerCapture(event.pointerId);
    tool.current = [pointOf(event)];
  }

  function onMove(event) {
    if (!tool.current) return;
    tool.current.push(pointOf(event));
    redraw();
  }

  function onUp() {
    if (!tool.current) return;
    if (tool.current.length >= 3) { tool.paths.push(tool.current); status(""); } // a click is not a selection
    tool.current = null;
    redraw();
  }

  // The mask at the image's natural size: opaque white where the (4 px softened) selection is, black elsewhere.
  function maskDataUrl() {
    const { width, height } = naturalSize();
    const drawn = document.createElement("canvas");
    drawn.width = width;
    drawn.height = height;
    const ctx = drawn.getContext("2d");
    ctx.filter = "blur(4px)";
    ctx.fillStyle = "#ffffff";
    for (const path of tool.paths) {
      trace(ctx, path, { x: 1, y: 1 });
      ctx.closePath();
      ctx.fill();
    }
    const pixels = ctx.getImageData(0, 0, width, height);
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const octx = out.getContext("2d");
    const mask = octx.createImageData(width, height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      const v = pixels.data[i + 3] > 5 ? 255 : 0;
      mask.data[i] = v;
      mask.data[i + 1] = v;
      mask.data[i + 2] = v;
      mask.data[i + 3] = 255;
    }
    octx.putImageData(mask, 0, 0);
    return out.toDataURL("image/png");
  }

  // ------------------------------------------------------------------ modes

  function enter(mode) {
    tool.mode = mode;
    tool.paths = [];
    tool.current = null;
    status("");
    $("draw-prompt-box").classList.toggle("hidden", mode !== "flux_fill");
    $("mask-hint").textContent = mode === "flux_fill" ? "Draw around the area to fill" : "Draw around the area to erase";
    $("mask-apply").textContent = mode === "flux_fill" ? "Apply" : "Erase";
    $("tool-panel").classList.remove("hidden");
    canvas().classList.remove("hidden");
    fitCanvas();
    $("still-stage").scrollIntoView({ block: "nearest" });
    if (mode === "flux_fill") $("draw-prompt").focus({ preventScroll: true });
    buttons();
  }

  function leave() {
    tool.mode = null;
    tool.paths = [];
    tool.current = null;
    $("tool-panel").classList.add("hidden");
    canvas().classList.add("hidden");
    buttons();
  }

  function status(text) { $("tool-status").textContent = text; }

  function buttons() {
    const state = studio.state;
    const blocked = tool.running || state.busy || state.pendingUploads > 0 || !state.passId || !state.still;
    for (const id of ["tool-expand", "tool-draw", "tool-erase"]) $(id).disabled = blocked;
    for (const id of ["mask-apply", "mask-clear", "tool-back"]) $(id).disabled = tool.running;
    $("mask-apply").textContent = tool.running ? "Processing…" : tool.mode === "eraser" ? "Erase" : "Apply";
  }

  // ------------------------------------------------------------------ running a tool

  function outputUrl(data) {
    if (!data) return "";
    if (data.output_url) return data.output_url;
    const pick = (v) => (typeof v === "string" ? v : Array.isArray(v) ? pick(v[0]) : v && (v.url || v.image) || "");
    return pick(data.output);
  }

  // A request that outlives the server's wait answers `processing`; the result lands later: poll for it.
  async function settle(data) {
    const started = Date.now();
    while (data && data.status === "processing" && !outputUrl(data)) {
      if (Date.now() - started > POLL_LIMIT_MS) throw new Error("The edit is taking long; it will appear in your history.");
      status("Still working on it…");
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const view = await studio.api("GET", "/fingertips/generations/" + encodeURIComponent(data.generation_id));
      if (view.status === "error") {
        const err = new Error((view.error && view.error.message) || "Edit failed. Please try again.");
        err.code = (view.error && view.error.code) || "";
        throw err;
      }
      data = Object.assign({}, data, view, { status: view.status === "done" ? "done" : "processing" });
    }
    return data;
  }

  async function generate(modelKey, inputs) {
    const state = studio.state;
    const parent = state.still;
    tool.running = true;
    state.busy = true;
    studio.updateButtons();
    studio.showError(null);
    status(LABELS[modelKey] + ": processing…");
    try {
      const data = await settle(await studio.api("POST", "/fingertips/generate", { modelKey, inputs }));
      const url = outputUrl(data);
      if (!url) throw new Error("Edit produced no result.");
      const id = data.generation_id || data.generationId || data.id || url;
      studio.trackSession(id, "fingertips", parent.id);
      studio.sessionStatus(id, "done");
      leave();
      studio.addStill({ id, url, prompt: "fingertips:" + modelKey });
      status(LABELS[modelKey] + " done.");
    } catch (err) {
      studio.showError(err);
      status(err.message || String(err));
    } finally {
      tool.running = false;
      state.busy = false;
      studio.updateButtons();
      studio.refreshBalance();
    }
  }

  function expand() {
    const still = studio.state.still;
    if (!still) return;
    leave();
    generate("expand", { image: still.url, aspect_ratio: expandRatio() });
  }

  function apply() {
    const still = studio.state.still;
    if (!still || !tool.mode || tool.running) return;
    if (!tool.paths.length) { status("Draw a selection on the area first"); return; }
    const mask = maskDataUrl();
    if (tool.mode === "eraser") {
      generate("eraser", { image: still.url, mask_image: mask });
      return;
    }
    const prompt = $("draw-prompt").value.trim();
    if (!prompt) { status("Describe what to generate in the selection first"); $("draw-prompt").focus(); return; }
    generate("flux_fill", { image: still.url, mask, prompt, mask_type: "manual", sync: true, preserve_alpha: true });
  }

  function boot() {
    studio = window.MinaStudio;
    if (!studio) return;
    const c = canvas();
    c.addEventListener("pointerdown", onDown);
    c.addEventListener("pointermove", onMove);
    c.addEventListener("pointerup", onUp);
    c.addEventListener("pointercancel", onUp);
    $("tool-expand").addEventListener("click", expand);
    $("tool-draw").addEventListener("click", () => enter("flux_fill"));
    $("tool-erase").addEventListener("click", () => enter("eraser"));
    $("mask-apply").addEventListener("click", apply);
    $("mask-clear").addEventListener("click", () => { tool.paths = []; tool.current = null; redraw(); status(""); });
    $("tool-back").addEventListener("click", () => { leave(); status(""); });
    $("draw-prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
    $("still").addEventListener("load", () => { if (tool.mode) fitCanvas(); });
    window.addEventListener("resize", () => { if (tool.mode) fitCanvas(); });
    document.addEventListener("mina:buttons", buttons);
    document.addEventListener("mina:still", () => { if (tool.mode && !tool.running) leave(); });
    buttons();
  }

  document.addEventListener("DOMContentLoaded", boot);
})();
