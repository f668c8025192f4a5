// edged's page: polls /api/overview every second; the live view is an MJPEG <img>.
"use strict";
const $ = (id) => document.getElementById(id);
let streaming = false;
let busy = false;

function text(id, value) { $(id).textContent = value; }
function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : new Date(iso).toLocaleString();
}
function pct(x) { return typeof x === "number" ? `${Math.round(x * 100)}%` : ""; }

function showPicture(why) {
  const img = $("live");
  if (why === null) {
    $("no-picture").hidden = true;
    if (!streaming) { img.src = `/stream.mjpg?t=${Date.now()}`; img.hidden = false; streaming = true; }
  } else {
    if (streaming) { img.removeAttribute("src"); img.hidden = true; streaming = false; }
    $("no-picture").hidden = false;
    text("no-picture", why);
  }
}

function render(o) {
  const h = $("health");
  h.textContent = o.health.ok ? "running" : o.health.reason;
  h.className = "pill " + (o.health.ok ? "ok" : "bad");
  showPicture(o.picture);
  if (!busy) $("detect").checked = o.detect;
  const st = o.state || {};
  text("expression", st.expression ?? "–");
  text("confidence", st.expression && st.expression !== "none" ? pct(st.confidence) : "");
  text("since", ago(st.since));
  text("faces", st.faces ?? 0);
  const ol = $("events");
  ol.replaceChildren(...o.events.map((e) => {
    const li = document.createElement("li");
    li.textContent = `${e.from} → ${e.to} ${pct(e.confidence)}, ${ago(e.time)}`;
    return li;
  }));
  const s = o.stats || {};
  const lat = s.latency_ms || {};
  text("fps", s.fps != null ? `${s.fps} of ${s.target_fps} fps` : "–");
  text("latency", lat.p50 != null ? `${lat.p50} ms (p95 ${lat.p95} ms)` : "–");
  text("cpu", s.cpu_percent != null ? `${s.cpu_percent}% of a core` : "–");
  text("rss", s.rss_mb != null ? `${s.rss_mb} MB` : "–");
  text("camera", o.camera.online ? `online: ${o.camera.reason}` : `offline: ${o.camera.reason}`);
  const m = s.model || {};
  let model = m.version ? `${m.version} (${m.state})` : m.state || "–";
  if (m.error) model += `: ${m.error}`;
  if (m.reloads) model += `, ${m.reloads} reload(s)`;
  text("model", model);
  text("broker", s.broker_connected == null ? "MQTT off" : s.broker_connected ? "connected" : "not connected");
  text("viewers", `${o.viewers.now} of ${o.viewers.max}`);
}

async function poll() {
  try {
    const r = await fetch("/api/overview", { cache: "no-store" });
    if (r.ok) render(await r.json());
    else showPicture(`The daemon answered ${r.status}.`);
  } catch (e) {
    showPicture("The daemon is not reachable.");
  }
}

$("detect").addEventListener("change", async (ev) => {
  busy = true;
  try {
    await fetch("/api/detect", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ on: ev.target.checked }),
    });
  } finally {
    busy = false;
    poll();
  }
});
$("live").addEventListener("error", () => { streaming = false; });
poll();
setInterval(poll, 1000);
