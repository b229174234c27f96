// framepipe console: boxes of overlay-mode segments drawn on a canvas over the video.
// Each segment seg_<gop>.ts has a sidecar seg_<gop>.json (its frames' times from the
// segment's first frame, and their detections in source pixels). The frame on screen is
// found from the video's presentation time (requestVideoFrameCallback's mediaTime where
// the browser has it, currentTime otherwise) and the fragment hls.js buffered it from.
"use strict";
const BOX_COLOUR = "rgb(40, 230, 60)";  // framepipe.media.annotate.BOX_COLOUR
window.framepipeOverlay = {};  // per camera: what was drawn last (for tests and debugging)

function attachOverlay(cam, video, hls, canvas) {
  const fragments = new Map();  // sn → {frag, meta}
  const state = { frame: null, boxes: [], mode: null, drawn: 0 };
  window.framepipeOverlay[cam] = state;
  hls.on(Hls.Events.FRAG_BUFFERED, async (_e, data) => {
    const frag = data.frag;
    if (frag.type && frag.type !== "main") return;
    const url = frag.url.replace(/\.ts(\?|$)/, ".json$1");
    try {
      const meta = await (await fetch(url, { credentials: "same-origin" })).json();
      fragments.set(frag.sn, { frag, meta });
      for (const sn of fragments.keys()) if (sn < frag.sn - 30) fragments.delete(sn);
    } catch (e) { console.warn("sidecar", url, e); }
  });

  function frameAt(time) {
    for (const { frag, meta } of fragments.values()) {
      if (time < frag.start - 0.001 || time >= frag.start + frag.duration) continue;
      const rel = time - frag.start + 0.002;
      let best = null;
      for (const f of meta.frames) if (f.t !== undefined && f.t <= rel) best = f;
      return { meta, frame: best };
    }
    return null;
  }

  function draw(time) {
    const w = video.clientWidth, h = video.clientHeight;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const found = frameAt(time);
    state.mode = found ? found.meta.mode : null;
    if (!found || !found.frame || found.meta.mode !== "overlay" || !video.videoWidth) return;
    // The video keeps its aspect inside the element (object-fit: contain).
    const scale = Math.min(w / video.videoWidth, h / video.videoHeight);
    const ox = (w - video.videoWidth * scale) / 2, oy = (h - video.videoHeight * scale) / 2;
    ctx.strokeStyle = ctx.fillStyle = BOX_COLOUR;
    ctx.lineWidth = 3;
    ctx.font = "12px system-ui, sans-serif";
    state.frame = found.frame.frame;
    state.boxes = found.frame.detections.map((d) => d.box);
    for (const d of found.frame.detections) {
      const [x1, y1, x2, y2] = d.box;
      const x = ox + x1 * scale, y = oy + y1 * scale;
      ctx.strokeRect(x, y, (x2 - x1) * scale, (y2 - y1) * scale);
      ctx.fillText(`${d.label} ${d.score.toFixed(2)}`, x + 2, Math.max(12, y - 4));
      const attrs = Object.entries(d.attributes || {})
        .map(([name, a]) => `${name} ${typeof a.value === "number" ? a.value.toFixed(1) : a.value}`);
      if (attrs.length) ctx.fillText(attrs.join("  "), x + 2, y + (y2 - y1) * scale + 14);
    }
    state.drawn += 1;
  }

  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = (_now, info) => { draw(info.mediaTime); video.requestVideoFrameCallback(onFrame); };
    video.requestVideoFrameCallback(onFrame);
    video.addEventListener("seeked", () => draw(video.currentTime));
  } else {
    const loop = () => { draw(video.currentTime); requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
  }
}
