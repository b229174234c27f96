// framepipe console: boxes that arrive on a WebRTC session's "boxes" data channel, drawn on the
// tile's canvas over the video. Each message holds frames' detections with the RTP timestamp of
// the frame they belong to (the server maps them, web/packet_track.py). On every frame shown
// (requestVideoFrameCallback's rtpTimestamp) the latest boxes at or before that frame are drawn;
// boxes whose frame is behind the picture (the instant view shows the camera at once, the
// detector answers later) are drawn where they last were, faded and dashed, marked "late".
"use strict";
const LIVE_BOX_COLOUR = "rgb(40, 230, 60)";  // framepipe.media.annotate.BOX_COLOUR
const RTP_HZ = 90000;
const LATE_S = 0.06;   // behind the picture by more than ~1.5 frames at 25 fps: late
const STALE_S = 5.0;   // boxes this far behind are no longer drawn
window.framepipeLiveBoxes = {};  // per camera: what was drawn (for tests and debugging)

function rtpBehind(shown, box) {
  // How far (s) the box's frame is behind the frame shown; RTP timestamps wrap at 2^32.
  let d = (shown - box) % 4294967296;
  if (d < 0) d += 4294967296;
  if (d >= 2147483648) d -= 4294967296;
  return d / RTP_HZ;
}

function attachLiveBoxes(cam, video, canvas, channel, view) {
  if (video.fpLiveBoxes) { video.fpLiveBoxes.listen(channel); return video.fpLiveBoxes.state; }  // a reconnect
  const state = { view, received: 0, queued: [], current: null, drawn: 0, lateDrawn: 0, onTimeDrawn: 0,
                  behindS: null, late: false, frame: null, boxes: [], mode: view === "instant" ? "instant" : "overlay" };
  window.framepipeLiveBoxes[cam] = state;
  window.framepipeOverlay = window.framepipeOverlay || {};
  window.framepipeOverlay[cam] = state;  // the HLS overlay's test hook reads the same fields
  const listen = (ch) => {
    state.queued = [];
    state.current = null;  // a new session: new RTP timestamps
    ch.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== "boxes") return;
      state.received += 1;
      for (const f of message.frames) if (f.rtp !== null && f.rtp !== undefined) state.queued.push(f);
      if (state.queued.length > 300) state.queued.splice(0, state.queued.length - 300);
    };
  };
  listen(channel);
  video.fpLiveBoxes = { state, listen };

  function pick(shownRtp) {
    // The latest boxes at or before the frame shown; later ones wait for their frame.
    let best = null, bestBehind = Infinity;
    for (const f of state.queued) {
      const behind = rtpBehind(shownRtp, f.rtp);
      if (behind >= 0 && behind < bestBehind) { best = f; bestBehind = behind; }
    }
    if (best) {
      state.queued = state.queued.filter((f) => rtpBehind(best.rtp, f.rtp) < 0);  // keep newer ones
      state.current = best;
    }
    return state.current ? rtpBehind(shownRtp, state.current.rtp) : null;
  }

  function draw(shownRtp) {
    const w = video.clientWidth, h = video.clientHeight;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const behind = shownRtp === undefined ? 0 : pick(shownRtp);
    if (shownRtp === undefined && state.queued.length) state.current = state.queued[state.queued.length - 1];
    const f = state.current;
    if (!f || behind === null || behind > STALE_S || !video.videoWidth) return;
    const late = behind > LATE_S;
    const scale = Math.min(w / video.videoWidth, h / video.videoHeight);
    const ox = (w - video.videoWidth * scale) / 2, oy = (h - video.videoHeight * scale) / 2;
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle = LIVE_BOX_COLOUR;
    ctx.lineWidth = 3;
    ctx.globalAlpha = late ? 0.45 : 1.0;
    if (late) ctx.setLineDash([8, 6]);
    ctx.font = "12px system-ui, sans-serif";
    for (const d of f.detections) {
      const [x1, y1, x2, y2] = d.box;
      const x = ox + x1 * scale, y = oy + y1 * scale;
      ctx.strokeRect(x, y, (x2 - x1) * scale, (y2 - y1) * scale);
      const label = `${d.label} ${d.score.toFixed(2)}` + (late ? ` · ${behind.toFixed(1)} s late` : "");
      ctx.fillText(label, x + 2, Math.max(12, y - 4));
    }
    ctx.restore();
    Object.assign(state, { behindS: behind, late, frame: f.frame, boxes: f.detections.map((d) => d.box) });
    state.drawn += 1;
    if (late) state.lateDrawn += 1; else state.onTimeDrawn += 1;
  }

  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = (_now, meta) => { draw(meta.rtpTimestamp); video.requestVideoFrameCallback(onFrame); };
    video.requestVideoFrameCallback(onFrame);
  } else {
    const loop = () => { draw(undefined); requestAnimationFrame(loop); };  // no frame times: latest boxes
    requestAnimationFrame(loop);
  }
  return state;
}
