// framepipe console: live view over WebRTC (WHEP, POST /whep/<camera>?view=instant|annotated); the
// console falls back to HLS when this fails. A session that drops (server restart, network) is
// re-offered after a pause; after REOFFERS failed re-offers in a row the tile falls back to HLS
// and says why (player.note). Boxes come on the session's "boxes" data channel (live_boxes.js).
"use strict";
const REOFFERS = 3;  // failed re-offers after a drop before the tile gives up on WebRTC
const DISCONNECTED_MS = 3000;  // "disconnected" this long counts as a drop (failed takes ~30 s)

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
// unavailable at the start, or with a reason (`fallback(note)`) when a session that played
// dropped and REOFFERS re-offers in a row failed.
function playLive(cam, video, fallback, view, canvas) {
  const player = { video, canvas, view: view || "instant", mode: "webrtc", pc: null, bufferS: null,
                   session: null, failures: 0, note: "", stopped: false };
  const dropped = (pc) => {
    if (player.stopped || pc !== player.pc) return;  // an old session, or one already handled
    player.pc = null;
    pc.close();
    player.note = "WebRTC dropped: re-offering";
    setTimeout(start, 1000);
  };
  const start = async () => {
    if (player.stopped) return;
    try {
      const pc = await whepConnect(cam, video, player);
      player.pc = pc;
      player.failures = 0;
      player.note = "";
      let quiet = null;
      pc.addEventListener("connectionstatechange", () => {
        clearTimeout(quiet);
        if (["failed", "closed"].includes(pc.connectionState)) dropped(pc);
        else if (pc.connectionState === "disconnected") quiet = setTimeout(() => dropped(pc), DISCONNECTED_MS);
      });
    } catch (error) {
      console.warn("WebRTC for " + cam + ": " + error.message);
      player.failures += 1;
      if (player.failures === 1 && !player.everConnected) {
        player.mode = "hls";
        fallback();
      } else if (player.everConnected && player.failures >= REOFFERS) {
        player.mode = "hls";
        player.stopped = true;
        fallback(`WebRTC lost: ${player.failures} re-offers failed (${error.message}); playing HLS`);
      } else {
        player.note = `WebRTC dropped: re-offer ${player.failures} failed`;
        setTimeout(start, 2000);
      }
      return;
    }
    player.everConnected = true;
  };
  player.stop = () => {
    player.stopped = true;
    if (player.pc) player.pc.close();
    player.pc = null;
  };
  if (!window.RTCPeerConnection) {
    player.mode = "hls";
    fallback();
  } else {
    start();
  }
  const timer = setInterval(async () => {
    if (player.stopped) clearInterval(timer);
    else if (player.mode === "webrtc" && player.pc) player.bufferS = await playoutDelay(player.pc);
  }, 1000);
  return player;
}
