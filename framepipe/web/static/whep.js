// framepipe console: live view over WebRTC (WHEP, POST /whep/<camera>?view=instant|annotated); the
// console falls back to HLS when this fails. A session that drops (server restart, network) is
// re-offered after a pause. Boxes come on the session's "boxes" data channel (live_boxes.js).
"use strict";

function iceGathered(pc, timeoutMs) {
  // The server does not take trickled candidates: the offer carries them all.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

async function whepConnect(cam, video, player) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  // Lossy and unordered: a late box is worth less than the next one.
  const boxes = pc.createDataChannel("boxes", { ordered: false, maxRetransmits: 0 });
  pc.ontrack = (event) => {
    // The instant view is as late as the network: ask for the smallest jitter buffer.
    if (player.view === "instant" && "jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = 0;
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
    video.play().catch(() => {});
  };
  if (window.attachLiveBoxes && player.canvas) attachLiveBoxes(cam, video, player.canvas, boxes, player.view);
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc, 2000);
  const reply = await fetch("/whep/" + encodeURIComponent(cam) + "?view=" + player.view, {
    method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
  });
  if (reply.status !== 201) {
    pc.close();
    throw new Error((await reply.text()).trim());
  }
  player.session = reply.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await reply.text() });
  const connected = await new Promise((resolve) => {
    const check = () => {
      if (pc.connectionState === "connected") resolve(true);
      else if (["failed", "closed"].includes(pc.connectionState)) resolve(false);
    };
    pc.addEventListener("connectionstatechange", check);
    setTimeout(() => resolve(pc.connectionState === "connected"), 10000);
  });
  if (!connected) {
    pc.close();
    throw new Error("WebRTC did not connect (" + pc.connectionState + ")");
  }
  return pc;
}

// Seconds the browser holds frames before showing them (jitter buffer), from getStats.
async function playoutDelay(pc) {
  let delay = null;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
      delay = s.jitterBufferDelay / s.jitterBufferEmittedCount;
    }
  });
  return delay;
}

// Plays `cam` in `video` over WebRTC, the `view` ("instant": the camera's own stream at once;
// "annotated": the pipeline's output), boxes on `canvas`; calls `fallback()` once if WebRTC is
// unavailable at the start.
function playLive(cam, video, fallback, view, canvas) {
  const player = { video, canvas, view: view || "instant", mode: "webrtc", pc: null, bufferS: null,
                   session: null, failures: 0 };
  const start = async () => {
    try {
      player.pc = await whepConnect(cam, video, player);
      player.failures = 0;
      player.pc.addEventListener("connectionstatechange", () => {
        if (["failed", "closed"].includes(player.pc.connectionState)) setTimeout(start, 1000);
      });
    } catch (error) {
      console.warn("WebRTC for " + cam + ": " + error.message);
      player.failures += 1;
      if (player.failures === 1 && !player.everConnected) {
        player.mode = "hls";
        fallback();
      } else {
        setTimeout(start, 2000);
      }
      return;
    }
    player.everConnected = true;
  };
  if (!window.RTCPeerConnection) {
    player.mode = "hls";
    fallback();
  } else {
    start();
  }
  setInterval(async () => {
    if (player.mode === "webrtc" && player.pc) player.bufferS = await playoutDelay(player.pc);
  }, 1000);
  return player;
}
