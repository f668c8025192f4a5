// edged's page: polls /api/overview every second; the live view is an MJPEG <img>.
"use strict";
const $ = (id) => document.getElementById(id);
let streaming = false; // the <img> has a stream open (or opening)
let toggles = 0; // privacy clicks so far: an answer asked for before the last one is stale

function text(id, value) { $(id).textContent = value; }
function clock(iso) { return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }); }
function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : new Date(iso).toLocaleString();
}
function since(iso) { return iso ? `${clock(iso)} (${ago(iso)})` : "–"; }
function pct(x) { return typeof x === "number" ? `${Math.round(x * 100)}%` : ""; }

function showPicture(why) {
  const img = $("live");
  if (why === null) {
    if (!streaming) {
      img.src = `/stream.mjpg?t=${Date.now()}`;
      img.hidden = false;
      $("no-picture").hidden = true;
      streaming = true;
    }
    return;
  }
  if (streaming) { img.removeAttribute("src"); streaming = false; }
  img.hidden = true;
  $("no-picture").hidden = false;
  text("no-picture", why);
}

function health(ok, words) {
  const h = $("health");
  h.textContent = words;
  h.className = "pill " + (ok ? "ok" : "bad");
  document.body.classList.toggle("stale", !ok);
}

function renderNow(st, detectOn) {
  text("expression", st.expression ?? "–");
  text("confidence", st.expression && st.expression !== "none" ? pct(st.confidence) : "");
  text("since", since(st.since));
  const n = st.faces ?? 0;
  text("faces", detectOn ? `${n} face${n === 1 ? "" : "s"} in view` : "detection is off");
  document.title = st.expression ? `edged: ${st.expression}` : "edged";
}

function renderEvents(events) {
  const items = events.map((e) => {
    const li = document.createElement("li");
    const sure = e.to === "none" ? "" : ` ${pct(e.confidence)}`;
    li.textContent = `${e.from} → ${e.to}${sure}, ${clock(e.time)}`;
    return li;
  });
  $("events").replaceChildren(...items);
  $("no-events").hidden = items.length > 0;
}

function renderStats(s, o) {
  const lat = s.latency_ms || {};
  text("fps", s.fps != null ? `${s.fps} of ${s.target_fps} fps` : "–");
  text("latency", lat.p50 != null ? `${lat.p50} ms (p95 ${lat.p95} ms)` : "–");
  text("cpu", s.cpu_percent != null ? `${s.cpu_percent}% of a core` : "–");
  text("rss", s.rss_mb != null ? `${s.rss_mb} MB` : "–");
  text("camera", `${o.camera.online ? "online" : "offline"}: ${o.camera.reason}`);
  const m = s.model || {};
  let model = m.version ? `${m.version} (${m.state})` : m.state || "–";
  if (m.error) model += `: ${m.error}`;
  if (m.reloads) model += `, ${m.reloads} reload(s)`;
  if (m.failures) model += `, ${m.failures} failed`;
  text("model", model);
  text("broker", s.broker_connected == null ? "MQTT off" : s.broker_connected ? "connected" : "not connected");
  text("viewers", `${o.viewers.now} of ${o.viewers.max}`);
}

function render(o, asked) {
  health(o.health.ok, o.health.ok ? "running" : o.health.reason);
  showPicture(o.picture);
  if (asked === toggles) $("detect").checked = o.detect;
  renderNow(o.state || {}, o.detect);
  renderEvents(o.events);
  renderStats(o.stats || {}, o);
}

async function poll() {
  const asked = toggles;
  try {
    const r = await fetch("/api/overview", { cache: "no-store" });
    if (r.ok) render(await r.json(), asked);
    else { health(false, `error ${r.status}`); showPicture(`The daemon answered ${r.status}.`); }
  } catch (e) {
    health(false, "not reachable");
    showPicture("The daemon is not reachable: is edged run running?");
  }
}

$("detect").addEventListener("change", async (ev) => {
  toggles += 1;
  try {
    const r = await fetch("/api/detect", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ on: ev.target.checked }),
    });
    if (!r.ok) health(false, `switch refused: ${r.status}`);
  } catch (e) {
    health(false, "not reachable");
  } finally {
    toggles += 1;
    poll();
  }
});
$("live").addEventListener("error", () => {
  if (!streaming) return; // src removed on purpose
  streaming = false; // the next poll opens it again
  $("live").hidden = true;
  $("no-picture").hidden = false;
  text("no-picture", "The live view is not available right now (too many viewers?); retrying…");
});
poll();
setInterval(poll, 1000);
