// spoofwatch browser client: microphone (getUserMedia + AudioWorklet) or a
// dropped file, streamed over the native protocol on this page's own origin.
// Every event received is kept in window.spoofwatch.events.
"use strict";

(function () {
  const FILE_RATE_HZ = 16000;          // files are decoded and resampled to this rate
  const FILE_FRAME_SAMPLES = 320;      // 20 ms frames, like the reference client
  const FAST_BUFFER_BYTES = 256 * 1024; // "as fast as accepted": keep at most this much unsent
  const CHART_SPAN_S = 60;             // seconds of stream time the chart shows at most
  const CHART_MIN_SPAN_S = 20;         // ...and at least, so a young stream is not squashed
  const LOG_MAX_ITEMS = 600;           // DOM entries kept in the log (events are all kept)
  const CLOSE_REASONS = {
    1000: "stream complete",
    1001: "the server closed an idle stream, or is shutting down",
    1002: "protocol error (messages in the wrong order)",
    1003: "the server does not accept this audio format",
    1006: "connection lost without a close frame (the server stopped or the network dropped)",
    1007: "the server rejected a malformed message",
    1008: "the stream reached the server's duration limit",
    1009: "a message was larger than the server accepts",
    1011: "the server hit an internal error",
    1013: "the server is at capacity; try again later",
  };

  const state = {
    events: [],
    config: null,
    socket: null,
    connected: false,
    source: null,          // "microphone" | "file:<name>"
    alertActive: false,
    alerts: [],            // {t, wall, smoothed, threshold, end?}
    points: [],            // score events for the chart
    lastClose: null,       // {code, reason, words}
    errors: [],
  };
  window.spoofwatch = state;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  // The page runs one stream at a time. A session is claimed synchronously when
  // a start is asked for (before any await), so a second click or drop while
  // the first is still opening the microphone or decoding is refused, and every
  // handler acts on its own session only.
  let session = null;      // {label, socket, capture, cancelled, stopSent, summary}
  let drawPending = false;

  function wsUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    return scheme + "//" + window.location.host + "/" + query;
  }

  function fmt(x, digits) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits === undefined ? 2 : digits);
  }

  function setConn(text, kind) {
    $("conn-state").textContent = text;
    $("conn-state").dataset.state = kind;
  }

  function showError(text) {
    state.errors.push(text);
    $("error").textContent = text;
    $("error").hidden = false;
    logLine("error", text);
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function logLine(kind, text) {
    const log = $("log");
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = new Date().toLocaleTimeString() + "  " + text;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(item);
    while (log.childElementCount > LOG_MAX_ITEMS) log.removeChild(log.firstElementChild);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function describe(ev) {
    switch (ev.type) {
      case "score":
        return `score ${fmt(ev.t_start, 1)}–${fmt(ev.t_end, 1)} s: ` +
          (ev.score === null ? "not scored (no speech)" : `${fmt(ev.score)} (smoothed ${fmt(ev.smoothed)})`);
      case "alert_start":
        return `ALERT STARTED at ${fmt(ev.t, 1)} s: smoothed ${fmt(ev.smoothed)} below ${fmt(ev.threshold)}`;
      case "alert_end":
        return `alert ended at ${fmt(ev.t, 1)} s (${ev.reason}), smoothed ${fmt(ev.smoothed)}`;
      case "summary":
        return `summary: ${fmt(ev.duration_s, 1)} s, ${ev.scored_windows}/${ev.windows} windows scored, ` +
          `${ev.alerts} alert(s), ${ev.dropped_windows} dropped`;
      case "status":
        return `status: ${ev.dropped_windows} windows dropped, ${ev.overruns} overruns`;
      default:
        return JSON.stringify(ev);
    }
  }

  function showThresholds() {
    const c = state.config;
    $("thresholds").textContent = c ? `enter < ${fmt(c.enter_threshold)}, exit > ${fmt(c.exit_threshold)}` : "–";
  }

  function setBanner(kind, title, detail) {
    const banner = $("alert-banner");
    banner.dataset.state = kind;
    banner.hidden = kind === "none";
    $("alert-title").textContent = title;
    $("alert-detail").textContent = detail;
  }

  function onEvent(ev) {
    state.events.push(ev);
    if (ev.type !== "score" || ev.score !== null) logLine(ev.type, describe(ev));
    if (ev.type === "score") {
      state.points.push(ev);
      $("score-now").textContent = fmt(ev.score);
      $("smoothed-now").textContent = fmt(ev.smoothed);
      $("stream-time").textContent = fmt(ev.t_end, 1) + " s";
      $("speech-state").textContent = ev.speech ? "speech" : "no speech";
      $("speech-state").dataset.state = ev.speech ? "speech" : "silence";
    } else if (ev.type === "alert_start") {
      const wall = new Date();
      state.alertActive = true;
      state.alerts.push({ t: ev.t, wall: wall.toISOString(), smoothed: ev.smoothed, threshold: ev.threshold });
      setBanner("active", "⚠ SPOOF ALERT — this voice scores as synthetic",
        `Started at ${fmt(ev.t, 1)} s of the stream (${wall.toLocaleTimeString()}); ` +
        `smoothed score ${fmt(ev.smoothed)} is below the alert threshold ${fmt(ev.threshold)}.`);
      if (state.config) state.config.enter_threshold = ev.threshold;
    } else if (ev.type === "alert_end") {
      state.alertActive = false;
      const last = state.alerts[state.alerts.length - 1];
      if (last) last.end = ev.t;
      setBanner("ended", "Spoof alert ended",
        `Alert from ${last ? fmt(last.t, 1) : "?"} s to ${fmt(ev.t, 1)} s (${ev.reason}). ` +
        `${state.alerts.length} alert(s) in this stream.`);
      if (state.config) state.config.exit_threshold = ev.threshold;
    } else if (ev.type === "summary" && session) {
      session.summary = ev;
    }
    showThresholds();
    scheduleDraw();
  }

  // ---- sessions ------------------------------------------------------

  function resetView() {
    // A new stream starts with an empty chart, banner and readouts (events stay: they are the page's record).
    state.points = [];
    state.alerts = [];
    state.alertActive = false;
    state.lastClose = null;
    setBanner("none", "", "");
    ["score-now", "smoothed-now", "stream-time", "speech-state"].forEach((id) => { $(id).textContent = "–"; });
    $("speech-state").dataset.state = "unknown";
    scheduleDraw();
  }

  const REFUSED = "a stream is running: stop it before starting another";

  function claim(label, starter) {
    if (session) {
      showError(REFUSED);
      return null;
    }
    clearError();
    session = {
      label: label, socket: null, capture: null, cancelled: false, stopSent: false, summary: null,
      userStopped: false, // Stop pressed once: a second press abandons the server's summary
      starter: starter, // the control that started it: focus returns there when it ends
    };
    resetView();
    setConn(`starting ${label}…`, "connecting");
    updateButtons();
    return session;
  }

  function releaseCapture(s) {
    if (!s.capture) return;
    if (s.capture.node) s.capture.node.port.onmessage = null;
    s.capture.stream.getTracks().forEach((t) => t.stop());
    s.capture.context.close();
    s.capture = null;
  }

  function isCurrent(s) {
    return session === s;
  }

  function wanted(s) {
    // still the page's stream, and not stopped: only then may its failures be shown
    return isCurrent(s) && !s.cancelled;
  }

  function finishSession(s, words) {
    // A session that already ended (Stop pressed while it was still starting) may
    // finish late: it then releases what it holds and leaves the page to the next one.
    s.cancelled = true;
    releaseCapture(s);
    if (!isCurrent(s)) return;
    session = null;
    if (words !== undefined) setConn(words, "idle");
    if ($("error").textContent === REFUSED) clearError(); // it was about this stream, which has ended
    const focused = document.activeElement;
    updateButtons();
    if (!focused || focused === document.body || focused === $("stop")) $(s.starter).focus();
  }

  function stopSession(s) {
    if (!s || !isCurrent(s)) return;
    const socket = s.socket;
    const again = s.userStopped;
    s.userStopped = true;
    if (again && s.stopSent && socket) {
      // Stop again after stop was sent: the server has not answered; stop waiting for it.
      socket.onclose = null;
      socket.onmessage = null;
      socket.close();
      state.connected = false;
      showError("stopped without the server's summary: it did not answer the stop");
      finishSession(s, "stopped");
      return;
    }
    s.cancelled = true;
    releaseCapture(s);
    if (socket && socket.readyState === WebSocket.OPEN) {
      sendStop(s); // the server sends the last events and a summary, then closes; onclose ends the session
      setConn("stopping: waiting for the server's summary (Stop again to abandon it)", "connecting");
    } else if (socket && socket.readyState === WebSocket.CONNECTING) {
      socket.close(); // onclose ends the session
    } else {
      finishSession(s, "stopped"); // still opening the microphone or decoding the file
    }
  }

  function summaryWords(ev) {
    return ev ? ` — ${fmt(ev.duration_s, 1)} s, ${ev.scored_windows}/${ev.windows} windows scored, ${ev.alerts} alert(s)` : "";
  }

  async function explainConnectFailure(url) {
    if (session !== null) return; // another stream started meanwhile: this one's failure is old news
    // A WebSocket that fails before opening says nothing about why. The page's
    // own server answering /healthz (which needs no token) means it refused this
    // connection: with a token set, that is a wrong or missing token.
    let reachable = false;
    try {
      reachable = (await fetch("/healthz", { cache: "no-store" })).ok;
    } catch (err) {
      reachable = false;
    }
    if (session !== null) return;
    const where = url.split("?")[0];
    if (!reachable) {
      showError(`could not connect to ${where}: the server cannot be reached (stopped, or the network is down)`);
    } else if (token) {
      showError(`the server at ${where} refused the connection: check the token in the page address (?token=…)`);
    } else if (state.config && state.config.token_required) {
      showError(`the server at ${where} refused the connection: it needs a token, open the page as /?token=YOUR_TOKEN`);
    } else {
      showError(`the server at ${where} refused the connection`);
    }
  }

  // ---- connection ------------------------------------------------------

  function connect(s, sampleRate, encoding) {
    return new Promise((resolve, reject) => {
      let opened = false;
      const url = wsUrl();
      let socket;
      try {
        socket = new WebSocket(url);
      } catch (err) {
        showError(`cannot open ${url.split("?")[0]}: ${err.message}`);
        finishSession(s, "could not connect");
        reject(new Error("connection failed"));
        return;
      }
      socket.binaryType = "arraybuffer";
      s.socket = socket;
      state.socket = socket;
      setConn("connecting…", "connecting");
      socket.onopen = () => {
        opened = true;
        state.connected = true;
        state.source = s.label;
        socket.send(JSON.stringify({ type: "start", sample_rate: sampleRate, encoding: encoding, channels: 1 }));
        setConn(`streaming ${s.label} (${sampleRate} Hz)`, "open");
        logLine("open", `connected to ${url.split("?")[0]}, streaming ${s.label}`);
        updateButtons();
        resolve(socket);
      };
      socket.onmessage = (msg) => {
        if (typeof msg.data !== "string") return;
        try {
          onEvent(JSON.parse(msg.data));
        } catch (err) {
          showError(`the server sent something that is not a JSON event: ${err.message}`);
        }
      };
      socket.onclose = (ev) => {
        if (!isCurrent(s)) {
          finishSession(s); // an abandoned socket closing late: the page has moved on
          reject(new Error("connection failed"));
          return;
        }
        state.connected = false;
        const words = CLOSE_REASONS[ev.code] || `close code ${ev.code}`;
        state.lastClose = { code: ev.code, reason: ev.reason, words: words };
        const text = `connection closed (${ev.code}): ${ev.reason || words}`;
        if (ev.code === 1000) {
          setConn("finished: " + (ev.reason || words) + summaryWords(s.summary), "closed");
          logLine("close", text);
        } else if (!opened) {
          const stopped = s.cancelled;
          setConn(stopped ? "stopped" : "could not connect", stopped ? "idle" : "error");
          finishSession(s);
          if (!stopped) explainConnectFailure(url);
          reject(new Error("connection failed"));
          return;
        } else {
          setConn(`closed: ${ev.reason || words}`, "error"); // the server's own reason says more than the code
          showError(`${text}${ev.reason && ev.reason !== words ? " — " + words : ""}`);
        }
        finishSession(s);
      };
      socket.onerror = () => { /* the close event that follows carries the code */ };
    });
  }

  function sendStop(s) {
    // stop is the last message of a stream: sent once, and nothing after it
    if (s.stopSent) return;
    s.stopSent = true;
    if (s.socket && s.socket.readyState === WebSocket.OPEN) s.socket.send(JSON.stringify({ type: "stop" }));
  }

  // ---- microphone -----------------------------------------------------

  async function startMicrophone() {
    if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
      showError("the microphone needs a secure page: open it as http://127.0.0.1:PORT/ or over https");
      return;
    }
    if (state.config && state.config.token_required && !token) {
      showError("this server needs a token: open the page as /?token=YOUR_TOKEN");
      return; // no microphone prompt for a stream the server would refuse
    }
    const s = claim("microphone", "mic-start");
    if (!s) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (err) {
      if (wanted(s)) {
        showError(`no microphone: ${err.name === "NotAllowedError" ? "permission denied" : err.message || err.name}`);
      }
      finishSession(s, "not connected");
      return;
    }
    const context = new AudioContext();
    s.capture = { stream: stream, context: context, node: null };
    if (s.cancelled) {
      finishSession(s); // Stop was pressed while the browser asked for the microphone
      return;
    }
    try {
      try {
        await context.audioWorklet.addModule("/static/capture-worklet.js");
      } catch (err) {
        // the worklet comes from the server: failing to load it means the server is not there
        if (wanted(s)) {
          finishSession(s, "could not connect");
          explainConnectFailure(wsUrl());
        } else {
          finishSession(s);
        }
        return;
      }
      if (s.cancelled) {
        finishSession(s); // Stop was pressed while the worklet loaded (the context is closed)
        return;
      }
      const node = new AudioWorkletNode(context, "spoofwatch-capture");
      s.capture.node = node;
      const sourceNode = context.createMediaStreamSource(stream);
      const mute = context.createGain();
      mute.gain.value = 0; // pulled by the graph, but silent: no echo of the mic
      sourceNode.connect(node);
      node.connect(mute);
      mute.connect(context.destination);
      if (s.cancelled) {
        finishSession(s, "stopped");
        return;
      }
      const socket = await connect(s, context.sampleRate, "f32le");
      node.port.onmessage = (msg) => {
        if (socket.readyState === WebSocket.OPEN && !s.stopSent) socket.send(msg.data.buffer);
      };
      await context.resume();
    } catch (err) {
      // a failed connection has said why and ended the session; a Stop that raced the
      // start closed the context under it: neither is a capture error
      if (err.message !== "connection failed" && wanted(s)) {
        showError(`cannot capture the microphone: ${err.message}`);
        stopSession(s);
      }
    }
  }

  // ---- files ----------------------------------------------------------

  async function decodeFile(file) {
    const bytes = await file.arrayBuffer();
    // Decoding through a 16 kHz context resamples in the browser.
    const context = new OfflineAudioContext(1, 1, FILE_RATE_HZ);
    const audio = await context.decodeAudioData(bytes);
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const data = audio.getChannelData(c);
      for (let i = 0; i < data.length; i++) mono[i] += data[i] / audio.numberOfChannels;
    }
    return mono;
  }

  function wait(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  async function streamFile(file) {
    const s = claim(`file ${file.name}`, "file-input");
    if (!s) return;
    let samples;
    try {
      samples = await decodeFile(file);
    } catch (err) {
      if (wanted(s)) {
        showError(`cannot decode ${file.name}: ${err.message || err.name} (expected wav, flac, ogg or mp3)`);
      }
      finishSession(s, "not connected");
      return;
    }
    if (s.cancelled) {
      finishSession(s, "stopped");
      return;
    }
    if (!samples.length) {
      showError(`${file.name} holds no audio samples`);
      finishSession(s, "not connected");
      return;
    }
    const realtime = $("pace").value === "realtime";
    let socket;
    try {
      socket = await connect(s, FILE_RATE_HZ, "f32le");
    } catch (err) {
      return; // connect's close handler said why and ended the session
    }
    const started = performance.now();
    for (let pos = 0; pos < samples.length; pos += FILE_FRAME_SAMPLES) {
      if (realtime) {
        const due = started + (pos / FILE_RATE_HZ) * 1000;
        const ahead = due - performance.now();
        if (ahead > 0) await wait(ahead);
      } else {
        while (socket.bufferedAmount > FAST_BUFFER_BYTES && socket.readyState === WebSocket.OPEN) await wait(10);
      }
      // checked after every wait: Stop (or a close) may have come meanwhile, and stop must stay the last message
      if (s.cancelled || s.stopSent || socket.readyState !== WebSocket.OPEN) return;
      socket.send(samples.slice(pos, pos + FILE_FRAME_SAMPLES).buffer);
    }
    sendStop(s); // the server answers with the last events and a summary, then closes with 1000
    if (isCurrent(s) && !s.userStopped) setConn(`finishing ${s.label}: the server is scoring what it received`, "open");
  }

  // ---- chart ----------------------------------------------------------

  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      draw();
    });
  }

  function draw() {
    const canvas = $("chart");
    const g = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height;
    const pad = { l: 48, r: 12, t: 12, b: 28 };
    g.clearRect(0, 0, W, H);
    const pts = state.points;
    const tEnd = pts.length ? pts[pts.length - 1].t_end : CHART_MIN_SPAN_S;
    // The last CHART_SPAN_S seconds; a young stream fills at least CHART_MIN_SPAN_S.
    const t0 = Math.max(0, tEnd - CHART_SPAN_S), t1 = Math.max(t0 + CHART_MIN_SPAN_S, tEnd + 0.5);
    const c = state.config || {};
    const values = [];
    pts.forEach((p) => {
      if (p.t_end < t0) return;
      if (p.score !== null) values.push(p.score);
      if (p.smoothed !== null) values.push(p.smoothed);
    });
    if (c.enter_threshold !== undefined) values.push(c.enter_threshold, c.exit_threshold);
    let yMin = Math.min(-4, ...values) - 0.5, yMax = Math.max(6, ...values) + 0.5;
    yMin = Math.max(yMin, -20); yMax = Math.min(yMax, 20);
    const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (W - pad.l - pad.r);
    const y = (v) => pad.t + (1 - (Math.min(Math.max(v, yMin), yMax) - yMin) / (yMax - yMin)) * (H - pad.t - pad.b);

    // no-speech windows and alert spans as background bands
    g.fillStyle = "#e4e7ee";
    pts.forEach((p) => {
      if (!p.speech && p.t_end >= t0) g.fillRect(x(Math.max(p.t_start, t0)), pad.t, Math.max(1, x(p.t_end) - x(Math.max(p.t_start, t0))), H - pad.t - pad.b);
    });
    g.fillStyle = "rgba(229, 57, 53, 0.25)";
    state.alerts.forEach((a) => {
      const end = a.end === undefined ? tEnd : a.end;
      if (end >= t0) g.fillRect(x(Math.max(a.t, t0)), pad.t, Math.max(2, x(end) - x(Math.max(a.t, t0))), H - pad.t - pad.b);
    });

    // axes and grid
    g.strokeStyle = "#d3d8e2"; g.fillStyle = "#5d667a"; g.lineWidth = 1; g.font = "12px sans-serif";
    for (let v = Math.ceil(yMin); v <= yMax; v += Math.max(1, Math.round((yMax - yMin) / 8))) {
      g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(W - pad.r, y(v)); g.stroke();
      g.fillText(String(v), 8, y(v) + 4);
    }
    const tick = t1 - t0 > 30 ? 10 : 5;
    for (let t = Math.ceil(t0 / tick) * tick; t <= t1; t += tick) g.fillText(t + " s", x(t) - 10, H - 8);

    // thresholds
    const hline = (v, color) => {
      if (v === undefined || v === null) return;
      g.strokeStyle = color; g.lineWidth = 2; g.setLineDash([8, 6]);
      g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(W - pad.r, y(v)); g.stroke();
      g.setLineDash([]);
    };
    hline(c.exit_threshold, "#d07a00");
    hline(c.enter_threshold, "#b3261e");

    // smoothed score line (broken where smoothing was reset)
    g.strokeStyle = "#1d2330"; g.lineWidth = 2.5; g.beginPath();
    let drawing = false;
    pts.forEach((p) => {
      if (p.t_end < t0 || p.smoothed === null) { drawing = false; return; }
      if (drawing) g.lineTo(x(p.t_end), y(p.smoothed)); else g.moveTo(x(p.t_end), y(p.smoothed));
      drawing = true;
    });
    g.stroke();

    // window scores
    g.fillStyle = "#2b6cd4";
    pts.forEach((p) => {
      if (p.t_end < t0 || p.score === null) return;
      g.beginPath(); g.arc(x(p.t_end), y(p.score), 3, 0, 2 * Math.PI); g.fill();
    });
    if (!pts.length) {
      g.fillStyle = "#7a8295"; g.font = "16px sans-serif";
      g.fillText("Start the microphone or drop a file. The first score comes 4 s into the stream.", pad.l + 20, H / 2);
    }
  }

  // ---- controls -------------------------------------------------------

  function updateButtons() {
    const busy = session !== null;
    const focused = document.activeElement;
    $("mic-start").disabled = busy;
    $("file-input").disabled = busy;
    $("stop").disabled = !busy;
    // keyboard users keep their place: focus moves from a button just disabled to its counterpart
    if ((focused === $("mic-start") || focused === $("file-input")) && busy) $("stop").focus();
  }

  function downloadEvents() {
    const text = state.events.map((e) => JSON.stringify(e)).join("\n") + (state.events.length ? "\n" : "");
    const url = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "spoofwatch-events.jsonl";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  async function loadConfig() {
    try {
      const response = await fetch("/static/config.json", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      state.config = await response.json();
      showThresholds();
      if (state.config.token_required && !token) {
        showError("this server needs a token: open the page as /?token=YOUR_TOKEN");
      }
    } catch (err) {
      showError(`cannot read the server's settings (/static/config.json): ${err.message}`);
    }
    scheduleDraw();
  }

  function init() {
    $("mic-start").addEventListener("click", startMicrophone);
    $("stop").addEventListener("click", () => stopSession(session));
    $("file-input").addEventListener("change", (ev) => {
      const file = ev.target.files && ev.target.files[0];
      if (file) streamFile(file);
      ev.target.value = "";
    });
    $("download").addEventListener("click", downloadEvents);
    const zone = $("drop-zone");
    document.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
    document.addEventListener("dragleave", () => zone.classList.remove("over"));
    document.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("over");
      const file = ev.dataTransfer && ev.dataTransfer.files[0];
      if (!file) return;
      streamFile(file); // refused with a message while a stream runs
    });
    state.ready = loadConfig();
    updateButtons();
  }

  init();
})();
