// framepipe console: live cameras (WebRTC, whep.js; hls.js as the fallback), detections, live
// latency, backlog and replicas per stage. `?live=hls` forces HLS. `?view=annotated` plays the
// pipeline's output over WebRTC; the default, `?view=instant`, the camera's own stream at once with
// the boxes drawn over it as they arrive (the header's toggle switches). A camera is listed as soon
// as its gateway registers. An on-demand camera's tile has a "burn-in live" button: the annotated
// live rendition live.m3u8 (burnt in only while someone watches), over HLS.
"use strict";
const players = {};
const history = {};
const HISTORY = 120;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function addCamera(cam) {
  const box = el("div", { class: "cam", id: "cam-" + cam });
  const video = el("video", { muted: "", autoplay: "", playsinline: "", controls: "" });
  video.muted = true;
  const meta = el("div", { class: "meta" });
  const burnIn = el("button", { class: "burn-in", hidden: "", title: "the annotated live rendition (live.m3u8): boxes burnt in while you watch" }, "burn-in live");
  meta.append(el("strong", {}, cam), burnIn, el("span", { class: "dets" }, ""));
  const stage = el("div", { class: "stage" });
  const canvas = el("canvas", { class: "overlay" });
  stage.append(video, canvas);
  const warning = el("div", { class: "warning", hidden: "" });
  box.append(stage, meta, warning);
  document.getElementById("grid").append(box);
  burnIn.addEventListener("click", () => toggleBurnIn(cam, video, canvas, burnIn));
  playDefault(cam, video, canvas);
}

function playDefault(cam, video, canvas) {
  const forceHls = new URLSearchParams(location.search).get("live") === "hls";
  if (window.playLive && !forceHls) {
    const fallback = (note) => { playHls(cam, video, canvas); players[cam].note = note || ""; };
    const live = playLive(cam, video, fallback, liveView(), canvas);
    if (live.mode === "webrtc") players[cam] = live;  // else the fallback registered itself
  } else {
    playHls(cam, video, canvas);
  }
}

function stopPlayer(cam, video, canvas) {
  const p = players[cam];
  if (p && p.stop) p.stop();
  if (p && p.hls) p.hls.destroy();
  video.srcObject = null;
  video.removeAttribute("src");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  delete players[cam];
}

// The on-demand camera's burn-in live rendition instead of the tile's default view, and back.
function toggleBurnIn(cam, video, canvas, button) {
  const on = !(players[cam] && players[cam].rendition === "live");
  stopPlayer(cam, video, canvas);
  if (on) {
    playHls(cam, video, null, "live.m3u8");  // boxes are in the pixels: no canvas drawing
    players[cam].rendition = "live";
  } else {
    playDefault(cam, video, canvas);
  }
  button.classList.toggle("on", on);
}

function liveView() {
  return new URLSearchParams(location.search).get("view") === "annotated" ? "annotated" : "instant";
}

function setUpViewToggle() {
  const toggle = document.getElementById("view");
  if (!toggle) return;
  toggle.checked = liveView() === "instant";
  toggle.addEventListener("change", () => {
    const query = new URLSearchParams(location.search);
    query.set("view", toggle.checked ? "instant" : "annotated");
    location.search = query.toString();
  });
}

function playHls(cam, video, canvas, playlist) {
  const src = "/" + encodeURIComponent(cam) + "/" + (playlist || "index.m3u8");
  if (window.Hls && Hls.isSupported()) {
    const hls = new Hls({ liveSyncDurationCount: 2 });
    hls.loadSource(src);
    hls.attachMedia(video);
    let parsed = false;
    hls.on(Hls.Events.MANIFEST_PARSED, () => { parsed = true; video.play().catch(() => {}); });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      // A camera listed at its registration has no playlist until its first segment: ask again.
      if (data.fatal && data.type === Hls.ErrorTypes.NETWORK_ERROR && !parsed) setTimeout(() => hls.loadSource(src), 1000);
      else if (data.fatal && data.type === Hls.ErrorTypes.NETWORK_ERROR) setTimeout(() => hls.startLoad(), 1000);
      else if (data.fatal && data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    if (window.attachOverlay && canvas) attachOverlay(cam, video, hls, canvas);  // overlay.js
    players[cam] = { video, hls, mode: "hls" };
  } else {
    video.src = src;  // native HLS (Safari)
    video.play().catch(() => {});
    players[cam] = { video, mode: "hls" };
  }
}

// How far behind the camera the picture is: capture → send on the server plus the browser's
// jitter buffer (WebRTC), or hls.js's distance from the playlist's live edge (HLS).
function latencyText(cam, c) {
  const p = players[cam];
  if (!p) return "";
  if (p.mode === "webrtc" && p.note) return " · " + p.note;
  if (p.mode === "webrtc" && p.view === "instant" && c.webrtc && c.webrtc.instant && c.webrtc.instant.delay_s !== null) {
    return ` · instant ${(c.webrtc.instant.delay_s + (p.bufferS || 0)).toFixed(2)} s behind`;
  }
  if (p.mode === "webrtc" && c.webrtc && c.webrtc.delay_s !== null && c.webrtc.delay_s !== undefined) {
    return ` · WebRTC ${(c.webrtc.delay_s + (p.bufferS || 0)).toFixed(2)} s behind`;
  }
  const note = p.note ? ` · ${p.note}` : "";
  if (p.mode === "hls" && p.hls && p.hls.latency) return ` · HLS ${p.hls.latency.toFixed(1)} s behind live edge` + note;
  return " · " + p.mode + note;
}

// The camera's gateway state, as its tile says it (FP_SOURCES; "" before the first report).
const SOURCE_BADGES = {
  running: "● online · ", reconnecting: "◌ reconnecting… · ", failed: "✕ failed · ",
  ended: "■ ended · ", stopped: "■ stopped · ",
};
function sourceBadge(state) { return SOURCE_BADGES[state] || ""; }

async function refreshCameras() {
  const cams = await (await fetch("/api/cameras")).json();
  let faces = 0;
  for (const c of cams) {
    if (!document.getElementById("cam-" + c.camera)) addCamera(c.camera);
    const box = document.getElementById("cam-" + c.camera);
    const p = players[c.camera] || { mode: "" };
    box.dataset.mode = p.mode;
    box.dataset.view = p.mode === "webrtc" ? p.view : "";
    box.dataset.rendition = p.rendition || "";
    box.dataset.note = p.note || "";
    box.querySelector(".burn-in").hidden = c.output_mode !== "on-demand";
    // What the operator should change (B-frames the instant view cannot show), from the server.
    const warning = box.querySelector(".warning");
    const text = (c.webrtc && c.webrtc.instant && c.webrtc.instant.warning) || "";
    warning.hidden = !text;
    warning.textContent = text ? "⚠ " + text : "";
    box.dataset.source = c.source_state || "";
    box.querySelector(".dets").textContent = sourceBadge(c.source_state) +
      `${c.frames_with_faces}/${c.frames} recent frames with faces · ${c.segments} segments` +
      (c.gaps.length ? ` · ${c.gaps.length} gaps` : "") + (c.ended ? " · ended" : "") + latencyText(c.camera, c);
    faces += c.detections_total;
  }
  document.getElementById("summary").textContent =
    `${cams.length} camera(s) · ${faces} frames with faces`;
}

function draw(stage) {
  const canvas = document.getElementById("chart-" + stage);
  const rows = history[stage];
  const ctx = canvas.getContext("2d");
  const w = (canvas.width = canvas.clientWidth), h = (canvas.height = canvas.clientHeight);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...rows.map((r) => Math.max(r.lag, r.replicas)));
  // Axes: the y scale (messages waiting, or replicas) and the time window, one sample a second.
  ctx.fillStyle = "#999";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(`${max}`, 2, 11);
  ctx.fillText("0", 2, h - 6);
  ctx.fillText(`−${HISTORY} s`, 16, h - 6);
  const now = "now";
  ctx.fillText(now, w - ctx.measureText(now).width - 2, h - 6);
  ctx.strokeStyle = "#333";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, h - 4);
  ctx.lineTo(w, h - 4);
  ctx.stroke();
  for (const [key, colour] of [["lag", "#f0a030"], ["replicas", "#40c0f0"]]) {
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    rows.forEach((r, i) => {
      const x = (i / (HISTORY - 1)) * w, y = h - 4 - (r[key] / max) * (h - 8);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
}

async function refreshPipeline() {
  const data = await (await fetch("/api/pipeline")).json();
  for (const [stage, s] of Object.entries(data.stages)) {
    if (!history[stage]) {
      history[stage] = [];
      const box = el("div", { class: "chart" });
      const legend = el("div", { class: "legend" });
      legend.append(el("strong", {}, stage + " "), el("span", { class: "lag", id: "lag-" + stage }),
                    el("span", { class: "rep", id: "rep-" + stage }));
      box.append(legend, el("canvas", { id: "chart-" + stage }));
      document.getElementById("charts").append(box);
    }
    history[stage].push(s);
    if (history[stage].length > HISTORY) history[stage].shift();
    document.getElementById("lag-" + stage).textContent = `backlog ${s.lag} msgs (orange) `;
    document.getElementById("rep-" + stage).textContent = `replicas ${s.replicas} (blue)`;
    draw(stage);
  }
}

async function tick() {
  try { await refreshCameras(); } catch (e) { console.warn(e); }
  try { await refreshPipeline(); } catch (e) { console.warn(e); }
}
setUpViewToggle();
tick();
setInterval(tick, 1000);
