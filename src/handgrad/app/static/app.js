// The draw-a-digit page: a canvas posted as PNG to /api/predict while you draw, or an uploaded file.
// Plain browser JavaScript, no libraries; everything it needs comes from the handgrad server.
"use strict";

(() => {
  const BRUSH = 22;        // pen width on the 280-px canvas: about 2.2 px of an MNIST-sized image
  const INTERVAL_MS = 150; // while drawing, at most one prediction per interval
  const ACCEPTED = ["image/png", "image/jpeg"];

  const $ = (id) => document.getElementById(id);
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  const preview = $("preview");
  const pctx = preview.getContext("2d");
  const result = $("result");

  const state = {
    ready: false,        // a model is loaded
    classes: [],
    maxBytes: 2 * 1024 * 1024,
    ink: false,          // something has been drawn since the last clear
    pointer: null,       // id of the pointer drawing now
    last: null,          // its last position
    timer: null,         // pending throttled prediction
    busy: false,         // a request is in flight (never two at once)
    queued: false,       // the canvas changed while busy: predict again when the answer comes
    generation: 0,       // bumped by Clear and by uploads: older answers are dropped
  };

  // --- the empty state, the result, errors --------------------------------------------------------
  function setBusy(busy) {
    state.busy = busy;
    result.dataset.busy = String(busy || state.queued || state.timer !== null);
  }

  function clearCanvas() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    state.ink = false;
  }

  function clearPreview() {
    pctx.fillStyle = "#000";
    pctx.fillRect(0, 0, preview.width, preview.height);
  }

  function buildBars(classes) {
    const bars = $("bars");
    bars.replaceChildren();
    classes.forEach((name, i) => {
      const row = document.createElement("div");
      row.className = "bar";
      row.id = `bar-${i}`;
      row.dataset.index = String(i);
      row.dataset.label = name;
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      row.append(label, track, value);
      bars.append(row);
    });
  }

  function hideError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    result.dataset.state = "error";
  }

  function showEmpty() {
    result.dataset.state = "empty";
    $("prediction").textContent = "";
    $("confidence").textContent = "";
    $("placeholder").hidden = false;
    document.querySelectorAll("#bars .bar").forEach((row) => {
      row.classList.remove("top");
      delete row.dataset.probability;
      row.querySelector(".bar-fill").style.width = "0%";
      row.querySelector(".bar-value").textContent = "";
    });
    clearPreview();
    hideError();
  }

  function showResult(r) {
    hideError();
    $("placeholder").hidden = true;
    $("prediction").textContent = r.label;
    $("confidence").textContent = `${(100 * r.confidence).toFixed(1)}% confident`;
    r.probabilities.forEach((p, i) => {
      const row = $(`bar-${i}`);
      if (!row) return;
      row.dataset.probability = String(p);
      row.classList.toggle("top", i === r.prediction);
      row.querySelector(".bar-fill").style.width = `${(100 * p).toFixed(2)}%`;
      row.querySelector(".bar-value").textContent = `${(100 * p).toFixed(1)}%`;
    });
    // The image the model received, values in [0, 1]: H x W grey levels, or C x H x W channels first
    // (three channels drawn as RGB, one as grey).
    const planes = Array.isArray(r.input[0][0]) ? r.input : [r.input];
    const height = planes[0].length, width = planes[0][0].length;
    if (preview.width !== width || preview.height !== height) {
      preview.width = width;
      preview.height = height;
    }
    const rgb = planes.length === 3 ? planes : [planes[0], planes[0], planes[0]];
    const image = pctx.createImageData(width, height);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const k = 4 * (width * y + x);
        for (let c = 0; c < 3; c++) {
          image.data[k + c] = Math.round(255 * Math.min(1, Math.max(0, rgb[c][y][x])));
        }
        image.data[k + 3] = 255;
      }
    }
    pctx.putImageData(image, 0, 0);
    result.dataset.state = "ready";
  }

  // --- talking to the server ----------------------------------------------------------------------
  async function send(body, type) {
    const generation = state.generation;
    setBusy(true);
    try {
      const response = await fetch("/api/predict", {
        method: "POST", headers: { "Content-Type": type }, body,
      });
      let answer = null;
      try { answer = await response.json(); } catch (_) { answer = null; }
      if (generation !== state.generation) return; // cleared meanwhile
      if (response.ok && answer) showResult(answer);
      else showError((answer && answer.error) || `The server answered ${response.status}.`);
    } catch (_) {
      if (generation === state.generation) {
        showError("Cannot reach the server. Is `handgrad serve` still running?");
      }
    } finally {
      setBusy(false);
      if (state.queued) {
        state.queued = false;
        predictCanvas();
      }
    }
  }

  function predictCanvas() {
    if (!state.ready || !state.ink) return; // an empty canvas is never sent
    if (state.busy) { state.queued = true; setBusy(true); return; }
    setBusy(true);
    const generation = state.generation;
    canvas.toBlob((blob) => {
      if (!blob || generation !== state.generation || !state.ink) { setBusy(false); return; }
      send(blob, "image/png");
    }, "image/png");
  }

  function schedule() {
    if (state.timer !== null) return;
    state.timer = setTimeout(() => { state.timer = null; predictCanvas(); }, INTERVAL_MS);
    setBusy(state.busy);
  }

  function predictNow() {
    if (state.timer !== null) { clearTimeout(state.timer); state.timer = null; }
    predictCanvas();
    setBusy(state.busy);
  }

  // --- drawing with mouse, finger or stylus (Pointer Events) --------------------------------------
  function position(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: (event.clientX - box.left) * (canvas.width / box.width),
      y: (event.clientY - box.top) * (canvas.height / box.height),
    };
  }

  function dot(p) {
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(p.x, p.y, BRUSH / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  function line(from, to) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = BRUSH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    if (state.pointer !== null) return; // one stroke at a time
    event.preventDefault();
    try {
      canvas.setPointerCapture(event.pointerId); // keep the stroke when it leaves the canvas
    } catch (_) {
      // A pointer the browser does not track (a synthetic event): draw without capture.
    }
    state.pointer = event.pointerId;
    state.last = position(event);
    dot(state.last);
    state.ink = true;
    schedule();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (event.pointerId !== state.pointer) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of (events.length ? events : [event])) {
      const p = position(e);
      line(state.last, p);
      state.last = p;
    }
    schedule();
  });

  function endStroke(event) {
    if (event.pointerId !== state.pointer) return;
    state.pointer = null;
    state.last = null;
    predictNow();
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  // --- Clear and upload ---------------------------------------------------------------------------
  $("clear").addEventListener("click", () => {
    state.generation += 1; // answers still on their way are dropped
    if (state.timer !== null) { clearTimeout(state.timer); state.timer = null; }
    state.queued = false;
    clearCanvas();
    showEmpty();
    $("upload").value = "";
    setBusy(state.busy);
  });

  $("upload").addEventListener("change", (event) => {
    const file = event.target.files && event.target.files[0];
    if (!file) return;
    // The upload replaces the drawing: clear the canvas and drop answers about it.
    state.generation += 1;
    if (state.timer !== null) { clearTimeout(state.timer); state.timer = null; }
    state.queued = false;
    clearCanvas();
    if (!state.ready) { showError("No model is loaded; see the note above."); return; }
    if (!ACCEPTED.includes(file.type)) {
      showError(`${file.name}: choose a PNG or JPEG image (this file is ${file.type || "of unknown type"}).`);
      return;
    }
    if (file.size > state.maxBytes) {
      showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(state.maxBytes / 1048576).toFixed(0)} MB.`);
      return;
    }
    if (state.busy) {
      // Wait for the answer in flight, then send the file (never two requests at once).
      const waitAndSend = () => (state.busy ? setTimeout(waitAndSend, 20) : send(file, file.type));
      waitAndSend();
    } else {
      send(file, file.type);
    }
  });

  // --- start: ask the server what the model predicts ----------------------------------------------
  async function start() {
    clearCanvas();
    clearPreview();
    setBusy(false);
    try {
      const info = await (await fetch("/api/info")).json();
      state.ready = info.ready;
      state.classes = info.classes;
      state.maxBytes = info.max_body_bytes || state.maxBytes;
      if (!info.ready) {
        $("subtitle").textContent = "No model loaded.";
        $("no-model-message").textContent = info.message;
        $("no-model").hidden = false;
        return;
      }
      const fashion = /fashion/i.test(info.dataset || "");
      $("thing").textContent = fashion ? "clothing item" : "digit";
      document.title = fashion ? "handgrad · draw a clothing item" : "handgrad · draw a digit";
      document.querySelector("h1 .thin").textContent = fashion ? "· draw a clothing item" : "· draw a digit";
      $("subtitle").textContent =
        `Model trained on ${info.dataset}: ${info.classes.length} classes. Predictions appear as you draw.`;
      if (info.input_shape) {  // the preview shows what the model sees, at the model's size
        const [height, width] = info.input_shape.slice(-2);
        preview.width = width;
        preview.height = height;
        $("preview-size").textContent = `${height}×${width}`;
      }
      buildBars(info.classes);
      showEmpty();
      document.body.dataset.ready = "true";
    } catch (_) {
      showError("Cannot reach the server. Is `handgrad serve` still running?");
    }
  }

  start();
})();
