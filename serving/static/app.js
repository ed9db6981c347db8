// mnist-serve try-it page: draw (or drop) a digit, ask every model through the public v1 API.
// Plain browser JavaScript, no build step and nothing from a CDN.
"use strict";

(() => {
  const PREDICT_INTERVAL_MS = 150; // at most one round of requests this often while drawing
  const MAX_RETRY_AFTER_S = 30; // a refused last round waits for Retry-After, up to this
  const REQUEST_TIMEOUT_MS = 10_000; // a request with no answer by then is given up
  const SLOW_ROUND_MS = 1_500; // a round out this long shows "Waiting for the server…"
  // A failed model list is asked for again after 1, 2, 4 ... s, then every 30 s.
  const MODEL_LIST_RETRY_MS = { first: 1_000, max: 30_000 };
  const KEY_STORAGE = "mnist-serve.api-key";
  // Formats the server decodes (serving/codecs/images.py); others the browser reads go as PNG.
  const SENDABLE_TYPES = new Set(["image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp"]);
  const BLANK_IMAGE = /has no ink/i; // serving/codecs/images.py: "image has no ink: ..."
  const MAX_CANVAS_SIDE = 1024; // device pixels shown; beyond, strokes look no sharper
  const SENT_SIDE = 280; // pixels a side of the drawing sent to the server

  const canvas = document.getElementById("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const dropZone = document.getElementById("drop-zone");
  const resultsBox = document.getElementById("results");
  const statusLine = document.getElementById("status");
  const announcer = document.getElementById("announcer");
  const quickResults = document.getElementById("quick-results");
  const keyPanel = document.getElementById("key-panel");
  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("key-input");
  const keyMessage = document.getElementById("key-message");
  const keyPrompt = keyMessage.cloneNode(true); // the first prompt, markup and all
  const cardTemplate = document.getElementById("model-card");

  const state = {
    models: [], // [{name, version, accuracy, provider, isReady}]
    hasModelList: false, // the server answered GET /v1/models at least once
    isLoadingModels: false,
    modelListRetry: { timer: null, delayMs: MODEL_LIST_RETRY_MS.first, dueAt: 0 },
    refreshedForDrawing: -1, // the drawing a 404 already refreshed the model list for
    drawing: 0, // bumped whenever what the canvas shows changes
    cards: new Map(), // model name -> card elements
    ink: "light", // "light" = white ink on black, "dark" = black ink on white
    hasInk: false,
    upload: null, // the dropped/chosen file while it is what the canvas shows
    isDrawing: false,
    lastPoint: null,
    timer: null,
    isReadingFile: false,
    round: null, // the round of requests in flight: {controller, generation, drawing, isFinal}
    retry: null, // a refused last round, sent again after Retry-After: {timer}
    retriedDrawing: -1, // the drawing a refusal was already retried for (once is enough)
    isPending: false,
    generation: 0, // bumped by Clear so late answers for an old drawing are dropped
  };

  // ---------- API ----------

  function authHeaders(key) {
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  class ApiError extends Error {
    constructor(status, message, retryAfterS = null, sentKey = null) {
      super(message);
      this.status = status;
      this.sentKey = sentKey; // the API key the refused request carried, if any
      this.retryAfterS = retryAfterS; // 429/503: when the server asks to be tried again
    }

    get isRefusal() {
      return (this.status === 429 || this.status === 503) && this.retryAfterS !== null;
    }
  }

  function retryAfterSeconds(response) {
    const seconds = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
  }

  async function readError(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
      if (body && body.detail) return JSON.stringify(body.detail);
    } catch {
      // not JSON: fall through to the status text
    }
    return `${response.status} ${response.statusText}`.trim();
  }

  class NoAnswer extends Error {}

  // Given up after REQUEST_TIMEOUT_MS, or when `signal` aborts (Clear abandons a round).
  async function fetchJson(url, options = {}, signal = null) {
    // Abandoned before it was sent (Clear while the drawing was being encoded): send nothing.
    if (signal?.aborted) throw signal.reason;
    const sentKey = sessionStorage.getItem(KEY_STORAGE);
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new NoAnswer(`No answer from the server in ${REQUEST_TIMEOUT_MS / 1000} s`)),
      REQUEST_TIMEOUT_MS,
    );
    const abandon = () => controller.abort(signal.reason);
    signal?.addEventListener("abort", abandon);
    try {
      const response = await fetch(url, {
        ...options,
        headers: { Accept: "application/json", ...authHeaders(sentKey), ...(options.headers || {}) },
        signal: controller.signal,
      });
      if (!response.ok) {
        const message = await readError(response);
        throw new ApiError(response.status, message, retryAfterSeconds(response), sentKey);
      }
      return { body: await response.json(), response };
    } catch (error) {
      throw controller.signal.aborted ? controller.signal.reason : error;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abandon);
    }
  }

  // GET /v1/models -> {"models": [{name, versions, latest, accuracy, provider, ready, ...}]}
  function describeModels(body) {
    return (body.models || []).map((entry) => ({
      name: entry.name,
      version: entry.latest === undefined ? "" : String(entry.latest),
      accuracy: typeof entry.accuracy === "number" ? entry.accuracy : null,
      provider: entry.provider || "",
      isReady: entry.ready !== false,
    }));
  }

  function serverMilliseconds(response) {
    // Server-Timing: "queue;dur=0.1, infer;dur=0.4, total;dur=0.9" -> 0.9 (the server's whole time)
    const header = response.headers.get("Server-Timing") || "";
    const match = /(?:^|,)\s*total;dur=([\d.]+)/.exec(header);
    return match ? Number(match[1]) : null;
  }

  async function predict(model, body, contentType, signal) {
    const started = performance.now();
    const { body: answer, response } = await fetchJson(
      `/v1/models/${encodeURIComponent(model.name)}/predict`,
      { method: "POST", headers: { "Content-Type": contentType }, body },
      signal,
    );
    const roundTripMs = performance.now() - started;
    return { answer, roundTripMs, serverMs: serverMilliseconds(response) };
  }

  // ---------- status, announcements, API key ----------

  // The status line is a polite live region: an unchanged text is not touched, so not repeated.
  function setStatus(text, kind = "info") {
    if (statusLine.textContent !== text) statusLine.textContent = text;
    statusLine.dataset.kind = kind;
  }

  function setBusy() {
    const isWaitingForModels =
      state.hasInk && !state.hasModelList && (state.isLoadingModels || state.modelListRetry.timer !== null);
    const isBusy =
      isWaitingForModels ||
      state.isReadingFile ||
      state.timer !== null ||
      state.round !== null ||
      state.isPending ||
      state.retry !== null;
    resultsBox.setAttribute("aria-busy", String(isBusy));
  }

  function askForKey(message = null, status = "An API key is needed to call the models.") {
    keyPanel.hidden = false;
    if (message === null) keyMessage.replaceChildren(...keyPrompt.cloneNode(true).childNodes);
    else keyMessage.textContent = message;
    setStatus(status, "error");
    if (document.activeElement !== keyInput) keyInput.focus();
  }

  // A 401: ask for a key; one that was sent and refused is said so and forgotten.
  function onUnauthorized(error) {
    const storedKey = sessionStorage.getItem(KEY_STORAGE);
    if (error.sentKey === null) return askForKey();
    if (error.sentKey !== storedKey) return; // answered before the key changed; the new one goes next
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey(
      "That key was refused (401 Unauthorized). Enter the key the server was started with; it is " +
        "sent as Authorization: Bearer … and kept only for this browser tab.",
      "That API key was refused.",
    );
  }

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = keyInput.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    keyInput.value = "";
    keyPanel.hidden = true;
    loadModels(); // then the drawing, if there is one
  });

  // ---------- model cards ----------

  function formatPercent(fraction, digits = 1) {
    return `${(fraction * 100).toFixed(digits)} %`;
  }

  function buildCard(model) {
    const fragment = cardTemplate.content.cloneNode(true);
    const root = fragment.querySelector(".model-card");
    root.dataset.model = model.name;
    root.querySelector(".model-name").textContent = model.name;
    root.querySelector(".model-version").textContent = model.version ? `v${model.version}` : "";
    root.querySelector(".model-accuracy").textContent =
      model.accuracy === null ? "n/a" : formatPercent(model.accuracy, 2);
    root.querySelector(".model-provider").textContent =
      model.provider.replace(/ExecutionProvider$/, "") || "n/a";
    const bars = root.querySelector(".bars");
    const fills = [];
    for (let digit = 0; digit < 10; digit += 1) {
      const bar = document.createElement("li");
      bar.className = "bar";
      bar.innerHTML = '<div class="bar-track"><div class="bar-fill"></div></div>';
      const label = document.createElement("span");
      label.className = "bar-digit";
      label.textContent = String(digit);
      label.setAttribute("aria-hidden", "true");
      bar.append(label);
      bars.append(bar);
      fills.push(bar);
    }
    resultsBox.append(root);
    return {
      root,
      label: root.querySelector(".prediction-label"),
      confidence: root.querySelector(".prediction-confidence"),
      latency: root.querySelector(".prediction-latency"),
      error: root.querySelector(".model-error"),
      bars: fills,
      summary: null, // {quick, spoken}: this card's answer in the phone summary and announcement
    };
  }

  function showProbabilities(card, probabilities) {
    const top = probabilities.indexOf(Math.max(...probabilities));
    card.bars.forEach((bar, digit) => {
      const probability = probabilities[digit] ?? 0;
      bar.querySelector(".bar-fill").style.height = `${(probability * 100).toFixed(1)}%`;
      bar.dataset.top = String(digit === top && probability > 0);
      bar.setAttribute("aria-label", `${digit}: ${formatPercent(probability)}`);
      bar.title = `${digit}: ${formatPercent(probability, 2)}`;
    });
  }

  function resetCard(card, message = "Draw to predict") {
    card.summary = null;
    delete card.root.dataset.label;
    card.root.dataset.state = "idle";
    card.label.textContent = "–";
    card.confidence.textContent = message;
    card.latency.textContent = "";
    card.error.hidden = true;
    showProbabilities(card, new Array(10).fill(0));
  }

  function confidenceText(confidence) {
    // 0.9996 would round to "100.0 %": no model is that sure.
    return `${confidence >= 0.9995 ? "> 99.9 %" : formatPercent(confidence)} sure`;
  }

  function showPrediction(card, result) {
    const prediction = result.answer.predictions[0];
    card.root.dataset.state = "done";
    card.root.dataset.label = String(prediction.label);
    card.label.textContent = String(prediction.label);
    card.confidence.textContent = confidenceText(prediction.confidence);
    const name = card.root.dataset.model;
    card.summary = {
      quick: `${name} ${prediction.label}`,
      spoken: `${name} predicts ${prediction.label}, ${confidenceText(prediction.confidence)}`,
    };
    const roundTrip = document.createElement("span");
    roundTrip.className = "latency-round-trip";
    roundTrip.textContent = `${Math.round(result.roundTripMs)} ms round trip`;
    card.latency.replaceChildren(roundTrip);
    if (result.serverMs !== null) {
      const server = document.createElement("span");
      server.className = "latency-server";
      server.textContent = `server ${result.serverMs.toFixed(1)} ms`;
      card.latency.append(server);
    }
    card.error.hidden = true;
    showProbabilities(card, prediction.probabilities);
  }

  function showCardError(card, message) {
    const name = card.root.dataset.model;
    card.summary = { quick: `${name}: error`, spoken: `${name}: error` }; // the status line says why
    card.root.dataset.state = "error";
    delete card.root.dataset.label;
    card.label.textContent = "!";
    card.confidence.textContent = "No prediction";
    card.latency.textContent = "";
    card.error.textContent = message;
    card.error.hidden = false;
    showProbabilities(card, new Array(10).fill(0)); // the last answer's bars are not this one's
  }

  function showModels(models) {
    state.models = models;
    state.hasModelList = true;
    resultsBox.replaceChildren();
    state.cards.clear();
    for (const model of models) {
      const card = buildCard(model);
      resetCard(card, model.isReady ? "Draw to predict" : "Not ready yet");
      state.cards.set(model.name, card);
    }
    const readyCount = models.filter((model) => model.isReady).length;
    const counted = readyCount === models.length ? `${readyCount}` : `${readyCount} of ${models.length}`;
    if (models.length === 0) setStatus("This server has no models loaded.", "error");
    else setStatus(`${counted} model${models.length === 1 ? "" : "s"} ready. Draw a digit.`);
  }

  function retryModelListLater(error) {
    const retry = state.modelListRetry;
    clearTimeout(retry.timer);
    retry.dueAt = performance.now() + retry.delayMs;
    retry.timer = setTimeout(() => {
      retry.timer = null;
      loadModels();
    }, retry.delayMs);
    retry.delayMs = Math.min(retry.delayMs * 2, MODEL_LIST_RETRY_MS.max);
    setStatus(`Could not list the models (${error.message}); ${modelListRetryText()}.`, "error");
  }

  function modelListRetryText() {
    const seconds = Math.max(1, Math.ceil((state.modelListRetry.dueAt - performance.now()) / 1000));
    return `trying again in ${seconds} s`;
  }

  async function loadModels() {
    const retry = state.modelListRetry;
    clearTimeout(retry.timer);
    retry.timer = null;
    if (!state.hasModelList) setStatus("Loading models…");
    state.isLoadingModels = true;
    let body;
    try {
      ({ body } = await fetchJson("/v1/models"));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) onUnauthorized(error);
      else retryModelListLater(error);
      return;
    } finally {
      state.isLoadingModels = false;
      setBusy();
    }
    retry.delayMs = MODEL_LIST_RETRY_MS.first;
    showModels(describeModels(body));
    if (state.hasInk) requestPrediction(true);
  }

  // ---------- predictions ----------

  // A high-DPI canvas is sent scaled down to SENT_SIDE pixels: the server reduces any
  // picture to 20x20 anyway, and a 1024-pixel PNG would cost it 13 times the decoding.
  function canvasPng() {
    let sent = canvas;
    if (canvas.width > SENT_SIDE) {
      sent = document.createElement("canvas");
      sent.width = SENT_SIDE;
      sent.height = SENT_SIDE;
      const sentContext = sent.getContext("2d");
      sentContext.imageSmoothingQuality = "high";
      sentContext.drawImage(canvas, 0, 0, SENT_SIDE, SENT_SIDE);
    }
    return new Promise((resolve, reject) => {
      sent.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("canvas is empty"))), "image/png");
    });
  }

  function requestPrediction(isImmediate = false) {
    cancelRetry(); // a newer drawing goes anyway
    if (isImmediate) {
      clearTimeout(state.timer);
      state.timer = null;
      runPredictions();
    } else if (state.timer === null) {
      state.timer = setTimeout(() => {
        state.timer = null;
        runPredictions();
      }, PREDICT_INTERVAL_MS);
    }
    setBusy();
  }

  // `onlyModels`: a retry asks again only the models that refused.
  async function runPredictions(onlyModels = null) {
    if (state.round !== null) {
      state.isPending = true; // one more round when this one lands, with the newest drawing
      setBusy();
      return;
    }
    if (!state.hasInk) return setBusy();
    if (state.models.length === 0) {
      if (state.modelListRetry.timer !== null) {
        setStatus(`The server has not listed its models yet; ${modelListRetryText()}.`, "error");
      }
      return setBusy();
    }
    const round = {
      controller: new AbortController(),
      generation: state.generation,
      drawing: state.drawing,
      isFinal: !state.isDrawing, // started after the pen lifted: its answer is announced
    };
    state.round = round;
    setBusy();
    const slowTimer = setTimeout(() => setStatus("Waiting for the server…", "hint"), SLOW_ROUND_MS);
    try {
      const body = state.upload || (await canvasPng());
      const contentType = state.upload ? state.upload.type : "image/png";
      const models = onlyModels ?? state.models;
      const outcomes = await Promise.allSettled(
        models.map((model) => predict(model, body, contentType, round.controller.signal)),
      );
      if (state.round === round && round.generation === state.generation) {
        showOutcomes(models, outcomes, round);
        retryRefusals(models, outcomes, round);
        if (outcomes.some(isModelNotFound)) refreshModelList();
      }
    } finally {
      clearTimeout(slowTimer);
      if (state.round === round) {
        state.round = null;
        if (state.isPending) {
          state.isPending = false;
          runPredictions();
        }
      }
      setBusy();
    }
  }

  // A last round some models refused (429/503 with Retry-After) would leave the finished
  // drawing without their answer: ask those models once more when the server says.
  function retryRefusals(models, outcomes, round) {
    const refusals = outcomes.map((outcome) => outcome.reason).filter((error) => error?.isRefusal);
    const isLastRound = round.isFinal && !state.isDrawing && !state.isPending && state.timer === null;
    if (refusals.length === 0 || !isLastRound || state.retriedDrawing === round.drawing) return;
    state.retriedDrawing = round.drawing;
    const refused = models.filter((_, index) => outcomes[index].reason?.isRefusal);
    const seconds = Math.min(Math.max(...refusals.map((error) => error.retryAfterS)), MAX_RETRY_AFTER_S);
    setStatus(`${statusLine.textContent} Trying again in ${seconds} s.`, "error");
    state.retry = {
      timer: setTimeout(() => {
        state.retry = null;
        runPredictions(refused);
      }, seconds * 1000),
    };
  }

  function cancelRetry() {
    if (state.retry === null) return;
    clearTimeout(state.retry.timer);
    state.retry = null;
  }

  // Clear: the round in flight is for a drawing that is gone; stop waiting for it.
  function abandonRound() {
    if (state.round === null) return;
    state.round.controller.abort(new NoAnswer("abandoned"));
    state.round = null;
  }

  function isModelNotFound(outcome) {
    return outcome.status === "rejected" && outcome.reason instanceof ApiError && outcome.reason.status === 404;
  }

  // A 404 means the server restarted with other models: list them again, once per drawing.
  function refreshModelList() {
    if (state.refreshedForDrawing === state.drawing) return;
    state.refreshedForDrawing = state.drawing;
    loadModels();
  }

  function showOutcomes(models, outcomes, round) {
    let isBlank = false;
    let unauthorized = null;
    const failures = [];
    outcomes.forEach((outcome, index) => {
      const model = models[index];
      const card = state.cards.get(model.name);
      if (card === undefined) return; // the model list changed while this round was out
      if (outcome.status === "fulfilled") {
        showPrediction(card, outcome.value);
        return;
      }
      const error = outcome.reason;
      if (error instanceof ApiError && error.status === 401) {
        unauthorized = error;
        resetCard(card, "API key needed");
      } else if (error instanceof ApiError && error.status === 400 && BLANK_IMAGE.test(error.message)) {
        isBlank = true;
        resetCard(card);
      } else {
        const message =
          error instanceof ApiError || error instanceof NoAnswer
            ? error.message
            : `Cannot reach the server (${error.message})`;
        showCardError(card, message);
        failures.push(`${model.name}: ${message}`);
      }
    });
    if (unauthorized !== null) onUnauthorized(unauthorized);
    else if (failures.length > 0) setStatus(failures.join(" · "), "error");
    else if (isBlank) setStatus("No ink found yet: draw a digit, or use a picture with more contrast.", "hint");
    else setStatus("Live: predictions update as you draw.");
    // Every card's answer, also those a retry of only some models left as they were.
    const summaries = [...state.cards.values()].map((card) => card.summary).filter(Boolean);
    quickResults.textContent = summaries.map((summary) => summary.quick).join(" · ");
    // Once per lifted pen: not for a round that began mid-stroke, nor one a newer drawing follows.
    const isAnnounced = round.isFinal && !state.isDrawing && !state.isPending;
    if (summaries.length > 0 && isAnnounced) {
      announcer.textContent = summaries.map((summary) => summary.spoken).join(". ") + ".";
    }
  }

  // ---------- drawing ----------

  function inkColour() {
    return state.ink === "light" ? "#ffffff" : "#000000";
  }

  function paperColour() {
    return state.ink === "light" ? "#000000" : "#ffffff";
  }

  function paintPaper() {
    context.globalCompositeOperation = "source-over";
    context.fillStyle = paperColour();
    context.fillRect(0, 0, canvas.width, canvas.height);
    canvas.style.background = paperColour();
  }

  // The canvas has as many pixels as the screen shows it with, so strokes are sharp on a
  // high-DPI screen too (280 pixels shown 560 device pixels wide were blurry). Everything
  // that draws works in canvas.width units, and canvasPng scales what it sends.
  function fitCanvasToScreen() {
    const shown = canvas.getBoundingClientRect().width * (window.devicePixelRatio || 1);
    const side = Math.min(Math.round(shown), MAX_CANVAS_SIDE);
    if (!side || side === canvas.width) return; // hidden, or already fitted
    const previous = document.createElement("canvas");
    previous.width = canvas.width;
    previous.height = canvas.height;
    previous.getContext("2d").drawImage(canvas, 0, 0);
    const scale = side / canvas.width;
    canvas.width = side; // which clears it: what it showed is drawn back, rescaled
    canvas.height = side;
    context.drawImage(previous, 0, 0, side, side);
    if (state.lastPoint) {
      state.lastPoint = { x: state.lastPoint.x * scale, y: state.lastPoint.y * scale };
    }
  }

  function canvasPoint(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) / box.width) * canvas.width,
      y: ((event.clientY - box.top) / box.height) * canvas.height,
    };
  }

  function strokeTo(point) {
    context.globalCompositeOperation = "source-over";
    context.strokeStyle = inkColour();
    context.fillStyle = inkColour();
    context.lineWidth = canvas.width / 14; // about MNIST's stroke width relative to the digit
    context.lineCap = "round";
    context.lineJoin = "round";
    const from = state.lastPoint || point;
    if (from.x === point.x && from.y === point.y) {
      context.beginPath();
      context.arc(point.x, point.y, context.lineWidth / 2, 0, 2 * Math.PI);
      context.fill();
    } else {
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(point.x, point.y);
      context.stroke();
    }
    state.lastPoint = point;
  }

  function markChanged() {
    state.drawing += 1;
    state.hasInk = true;
    state.upload = null;
  }

  // Only the primary pointer draws: a second finger (or a palm) would join its points to the
  // first finger's with straight lines.
  canvas.addEventListener("pointerdown", (event) => {
    if (!event.isPrimary) return;
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    state.isDrawing = true;
    state.lastPoint = null;
    if (state.upload) paintPaper(); // drawing over a dropped picture starts a fresh canvas
    markChanged();
    strokeTo(canvasPoint(event));
    requestPrediction();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!state.isDrawing || !event.isPrimary) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length > 0 ? events : [event]) strokeTo(canvasPoint(each));
    state.drawing += 1;
    requestPrediction();
  });

  function endStroke(event) {
    if (!state.isDrawing || !event.isPrimary) return;
    state.isDrawing = false;
    state.lastPoint = null;
    requestPrediction(true);
  }

  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  canvas.addEventListener("lostpointercapture", endStroke);

  function clearCanvas() {
    state.generation += 1;
    state.drawing += 1;
    clearTimeout(state.timer);
    state.timer = null;
    state.isPending = false;
    abandonRound();
    cancelRetry();
    state.hasInk = false;
    state.upload = null;
    state.isDrawing = false;
    state.lastPoint = null;
    paintPaper();
    for (const card of state.cards.values()) resetCard(card);
    if (state.models.length > 0) setStatus("Cleared. Draw a digit.");
    announcer.textContent = "Canvas cleared.";
    quickResults.textContent = "";
    setBusy();
  }

  document.getElementById("clear").addEventListener("click", clearCanvas);

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" && event.key !== "Delete") return;
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type !== "radio" && target.type !== "file") return;
    event.preventDefault();
    clearCanvas();
  });

  // Switching ink colours inverts what is already drawn.
  for (const radio of document.querySelectorAll('input[name="ink"]')) {
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
      state.ink = radio.value;
      context.globalCompositeOperation = "difference";
      context.fillStyle = "#ffffff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.globalCompositeOperation = "source-over";
      canvas.style.background = paperColour();
      state.drawing += 1;
      if (state.hasInk) {
        state.upload = null; // the canvas, not the original file, now shows what to classify
        requestPrediction(true);
      }
    });
  }

  // ---------- image files ----------

  // An <img> decodes whatever the browser can display, SVG included (createImageBitmap cannot).
  function decodePicture(file) {
    const url = URL.createObjectURL(file);
    return new Promise((resolve, reject) => {
      const picture = new Image();
      picture.onload = () => resolve(picture);
      picture.onerror = () => reject(new Error(`cannot decode ${file.name}`));
      picture.src = url;
    }).finally(() => URL.revokeObjectURL(url));
  }

  // The picture's background: its border pixel of median brightness (ink rarely reaches the edge).
  function borderColour(image) {
    const { width, height, data } = image;
    const border = [];
    const add = (x, y) => {
      const i = (y * width + x) * 4;
      border.push([data[i], data[i + 1], data[i + 2]]);
    };
    for (let x = 0; x < width; x += 1) {
      add(x, 0);
      add(x, height - 1);
    }
    for (let y = 1; y < height - 1; y += 1) {
      add(0, y);
      add(width - 1, y);
    }
    border.sort((a, b) => a[0] + a[1] + a[2] - (b[0] + b[1] + b[2]));
    const [red, green, blue] = border[Math.floor(border.length / 2)];
    return `rgb(${red} ${green} ${blue})`;
  }

  async function showImage(file) {
    const picture = await decodePicture(file);
    const pictureWidth = picture.naturalWidth || canvas.width; // an SVG may have no size
    const pictureHeight = picture.naturalHeight || canvas.height;
    const scale = Math.min(canvas.width / pictureWidth, canvas.height / pictureHeight);
    const width = Math.max(1, Math.round(pictureWidth * scale));
    const height = Math.max(1, Math.round(pictureHeight * scale));
    const scaled = document.createElement("canvas");
    scaled.width = width;
    scaled.height = height;
    const scaledContext = scaled.getContext("2d", { willReadFrequently: true });
    scaledContext.fillStyle = paperColour(); // transparent parts show the paper
    scaledContext.fillRect(0, 0, width, height);
    scaledContext.drawImage(picture, 0, 0, width, height);
    // Bands beside a non-square picture take its background colour, so the canvas has one
    // background, and the ink switch's inversion inverts it all alike.
    const background = borderColour(scaledContext.getImageData(0, 0, width, height));
    context.globalCompositeOperation = "source-over";
    context.fillStyle = background;
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(scaled, Math.floor((canvas.width - width) / 2), Math.floor((canvas.height - height) / 2));
    canvas.style.background = background;
  }

  async function useFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      setStatus(`${file.name} is not an image.`, "error");
      return;
    }
    state.generation += 1;
    state.drawing += 1;
    const generation = state.generation;
    state.isReadingFile = true; // busy from the moment the file arrives, not once it is drawn
    setBusy();
    let isShown = true;
    try {
      await showImage(file);
    } catch {
      isShown = false; // the browser cannot draw it; the server may still decode it
    } finally {
      state.isReadingFile = false;
    }
    if (generation !== state.generation) return setBusy(); // cleared while it was read
    state.hasInk = true;
    state.upload = SENDABLE_TYPES.has(file.type) || !isShown ? file : null;
    if (!isShown) setStatus(`Sending ${file.name} as is (this browser cannot preview it).`);
    requestPrediction(true);
  }

  const fileInput = document.getElementById("file-input");
  fileInput.addEventListener("change", () => {
    useFile(fileInput.files[0]);
    fileInput.value = ""; // choosing the same file again still fires "change"
  });

  let dragDepth = 0;
  window.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    dragDepth += 1;
    dropZone.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropZone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault(); // never let the browser navigate away to the dropped file
    dragDepth = 0;
    dropZone.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) useFile(file);
  });

  window.addEventListener("resize", fitCanvasToScreen); // a zoom or a phone turned too

  // ---------- start ----------

  fitCanvasToScreen();
  paintPaper();
  loadModels();
})();
