// framepipe console: each camera's events timeline (GET /api/events/<camera>, newest first) with
// the track's snapshot reference, and "enrol" on a kept snapshot (POST /api/faces/enroll).
"use strict";
const EVENT_LABELS = { "person.appeared": "appeared", "person.identified": "identified",
                       "person.left": "left", "alert.unknown_person": "ALERT unknown person" };

function eventItem(cam, e) {
  const li = document.createElement("li");
  li.className = "event";
  li.dataset.type = e.type;
  li.dataset.track = e.track;
  const when = new Date(e.last_seen * 1000).toLocaleTimeString();
  const who = e.identity + (e.distance !== null && e.distance !== undefined ? ` (${e.distance.toFixed(2)})` : "");
  const snap = e.snapshot || {};
  const kind = EVENT_LABELS[e.type] || (e.type.startsWith("alert.") ? `ALERT ${e.type.slice(6)}` : e.type);
  // The track's face attributes (docs/attributes.md): "mask worn", "fever 37.9".
  const attrs = Object.entries(e.attributes || {})
    .map(([name, a]) => `${name} ${typeof a.value === "number" ? a.value.toFixed(1) : a.value}`).join(", ");
  const text = `${when} · track ${e.track} · ${kind} · ${who}` + (attrs ? ` · ${attrs}` : "") +
    (snap.segment ? ` · ${snap.segment} frame ${snap.frame}` : "");
  li.append(document.createTextNode(text));
  if (snap.url) {
    const img = document.createElement("img");
    img.src = snap.url;
    img.alt = `track ${e.track}`;
    li.prepend(img);
    const button = document.createElement("button");
    button.textContent = "enrol";
    button.onclick = () => enrol(cam, e.track, li);
    li.append(button);
  }
  return li;
}

async function enrol(cam, track, li) {
  const name = prompt(`Name of the person in track ${track} (letters, digits, '_', '.', '-')`);
  if (!name) return;
  const reply = await fetch("/api/faces/enroll", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ camera: cam, track, name }),
  });
  let note = li.querySelector(".enrolled");
  if (!note) { note = document.createElement("span"); note.className = "enrolled"; li.append(note); }
  note.textContent = reply.ok ? ` enrolled as ${name}` : " " + (await reply.text()).trim();
}

async function refreshEvents() {
  for (const box of document.querySelectorAll(".cam")) {
    const cam = box.id.slice("cam-".length);
    let list = box.querySelector("ol.events");
    if (!list) {
      list = document.createElement("ol");
      list.className = "events";
      box.append(list);
    }
    const doc = await (await fetch("/api/events/" + encodeURIComponent(cam))).json();
    if (list.dataset.count === String(doc.events.length)) continue;
    list.dataset.count = String(doc.events.length);
    list.replaceChildren(...doc.events.slice().reverse().map((e) => eventItem(cam, e)));
  }
}
setInterval(() => refreshEvents().catch((e) => console.warn(e)), 2000);
