"""The live web page in a real browser: headless Chromium on a real ``edged run``.

One daemon (a looping clip: happy, surprise, nobody; a real Mosquitto) serves the page for
the whole module; each test opens it in a fresh browser tab under the server's own strict
CSP. Every wait is for something the page or the broker shows (a sentinel), never a sleep.
The privacy test switches detection off for good, so it comes last.

``EDGED_SCREENSHOT=docs/web-page.png`` also writes the README's screenshots (that file and
``docs/web-page-phone.png``); without it they go to the test's temporary folder only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import CLASSES, ROOT, SAMPLE, Segment, write_video
from fixtures_broker import Collector, device_id_for, wait_until

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
except ImportError:  # a dev extra
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.skipif(
        sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no {CHROMIUM} (tools/system-deps --test installs Debian's chromium)",
    ),
]

HAPPY = SAMPLE / "images" / "Aaron_Guiel_0001.jpg"
SURPRISE = SAMPLE / "images" / "Abdullah_Nasseef_0001.jpg"
# Headless, and nothing that phones home: this machine has no way out, and Chromium's
# background connections would otherwise be refused (and slow everything down).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1100, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 20_000  # a liveness bound for the page (the clip loops every 10 s), not a speed claim
FACES = list(CLASSES)  # what `#expression` says while a face is recognised
NOTHING = "\u2013"  # an en dash: what it says before the page knows

# Records every text `#expression` shows (each change once) in `window.seen`.
WATCH_EXPRESSION = """() => {
  const el = document.getElementById("expression");
  window.seen = [];
  const note = () => {
    if (window.seen.at(-1) !== el.textContent) window.seen.push(el.textContent);
  };
  note();
  new MutationObserver(note).observe(el, {childList: true, characterData: true, subtree: true});
}"""
# True once the page changed from one shown expression to a face's: the live view then
# shows that face for the ~2.5 s left of its segment.
JUST_CHANGED_TO_A_FACE = """(faces) => {
  const shown = window.seen.filter((t) => t !== "\u2013");
  const img = document.getElementById("live");
  return shown.length >= 2 && faces.includes(shown.at(-1)) && img.naturalWidth > 0
    && document.querySelectorAll("#events li").length > 0
    && document.getElementById("fps").textContent !== "\u2013";
}"""


@dataclass
class Daemon:
    url: str
    base: str  # its MQTT topics
    frame_size: tuple[int, int]  # (width, height) of the clip
    mqtt: Collector


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions

    def watch_expression(self) -> None:
        self.page.evaluate(WATCH_EXPRESSION)

    def seen(self) -> list[str]:
        return self.page.evaluate("() => window.seen")

    def assert_no_errors(self) -> None:
        assert self.errors == [], self.errors


@pytest.fixture(scope="module")
def daemon(request, broker, sample_model, tmp_path_factory) -> Iterator[Daemon]:
    """``python -m edged run`` on a looping clip, MQTT to the session's broker, its page
    on a free port; stopped with SIGTERM (then killed, if need be) at the end."""
    tmp = tmp_path_factory.mktemp("web-browser")
    clip = tmp / "clip.avi"
    frames = write_video(
        clip, [Segment(HAPPY, 3.0), Segment(SURPRISE, 3.0), Segment(None, 4.0)], fps=10
    )
    height, width = frames[0].shape[:2]
    device = device_id_for(f"{request.node.nodeid}::daemon")
    base = f"edged/{device}"
    mqtt = Collector(broker, f"{base}/#")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env |= {
        "PYTHONUNBUFFERED": "1",
        "EDGED_HTTP__PORT": "0",
        "EDGED_MQTT__HOST": broker.host,
        "EDGED_MQTT__PORT": str(broker.port),
        "EDGED_MQTT__DEVICE_ID": device,
    }
    log = tmp / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--source", clip.name, "--loop",
             "--model", str(sample_model), "--fps", "10"],
            stdout=subprocess.DEVNULL, stderr=err, cwd=tmp, env=env,
        )  # fmt: skip
    try:
        found: list[str] = []

        def url_logged() -> bool:
            found[:] = re.findall(r"web page at (http://\S+)", log.read_text())
            return bool(found) or proc.poll() is not None

        assert wait_until(url_logged, 30) and found, log.read_text()
        yield Daemon(found[0], base, (width, height), mqtt)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        mqtt.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser: Browser, daemon: Daemon, viewport: dict[str, int]) -> Tab:
    """The page in a fresh context (no shared cache), errors recorded from the start."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    tab = Tab(page)

    def console(msg: ConsoleMessage) -> None:
        # Any console error fails the test (the icon Chromium asks every site for included).
        if msg.type == "error":
            tab.errors.append(f"console: {msg.text} ({msg.location.get('url')})")

    page.on("console", console)
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
    page.goto(daemon.url)
    return tab


@pytest.fixture
def tab(browser, daemon) -> Iterator[Tab]:
    t = open_page(browser, daemon, DESKTOP)
    yield t
    t.page.context.close()


LIVE = "document.getElementById('live')"


def picture_size(page: Page) -> tuple[int, int]:
    w, h = page.evaluate(f"() => [{LIVE}.naturalWidth, {LIVE}.naturalHeight]")
    return w, h


def wait_for_picture(page: Page) -> None:
    page.wait_for_function(f"() => {LIVE}.naturalWidth > 0 && !{LIVE}.hidden")


# -- the tests ----------------------------------------------------------------------------


def test_live_picture_loads_at_the_clips_frame_size(tab, daemon):
    wait_for_picture(tab.page)
    assert picture_size(tab.page) == daemon.frame_size
    assert tab.page.locator("#no-picture").is_hidden()
    tab.assert_no_errors()


def test_expression_text_follows_the_faces_of_the_clip_as_the_daemon_publishes_them(tab, daemon):
    tab.watch_expression()
    tab.page.wait_for_function(
        "() => new Set(window.seen.filter((t) => t !== '\\u2013')).size >= 2", timeout=WAIT_MS
    )
    shown = [t for t in tab.seen() if t != NOTHING]
    for expression in shown:  # each one the daemon also published as its state
        assert expression in [*FACES, "none"], shown
        daemon.mqtt.wait_for(
            f"{daemon.base}/state", lambda m, e=expression: json.loads(m.payload)["expression"] == e
        )
    tab.assert_no_errors()


def test_screenshot_shows_a_face_in_the_live_view_with_its_expression_and_fits_a_phone(
    browser, tab, daemon, tmp_path
):
    """Desktop and phone shots, taken just after the page changed to a face's expression
    (the picture then shows that face); on the phone nothing is wider than the screen."""
    phone = open_page(browser, daemon, PHONE)
    try:
        tab.watch_expression()
        tab.page.wait_for_function(JUST_CHANGED_TO_A_FACE, arg=FACES, timeout=WAIT_MS)
        expression = tab.page.locator("#expression").text_content()
        desktop_png = tmp_path / "web-page.png"
        tab.page.screenshot(path=desktop_png)

        wait_for_picture(phone.page)
        phone.page.wait_for_function(
            "(e) => document.getElementById('expression').textContent === e", arg=expression
        )
        assert phone.page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        phone_png = tmp_path / "web-page-phone.png"
        phone.page.screenshot(path=phone_png, full_page=True)

        for png in (desktop_png, phone_png):
            data = png.read_bytes()
            assert data.startswith(b"\x89PNG\r\n\x1a\n") and 10_000 < len(data) < 400_000
        if target := os.environ.get("EDGED_SCREENSHOT"):
            out = ROOT / target  # relative to the repository
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(desktop_png, out)
            shutil.copyfile(phone_png, out.with_name(f"{out.stem}-phone{out.suffix}"))
        tab.assert_no_errors()
        phone.assert_no_errors()
    finally:
        phone.page.context.close()


def test_privacy_toggle_stops_the_picture_says_why_and_turns_mqtt_detect_off(tab, daemon):
    state = f"{daemon.base}/detect/state"
    daemon.mqtt.wait_for(state, lambda m: m.text == "ON", timeout=WAIT_MS / 1000)
    wait_for_picture(tab.page)
    switch = tab.page.get_by_role("switch", name="Expression detection")
    assert switch.is_checked()

    switch.click()

    tab.page.wait_for_function(f"() => {LIVE}.hidden && !{LIVE}.hasAttribute('src')")
    notice = tab.page.locator("#no-picture")
    notice.wait_for(state="visible")
    assert "switched off" in notice.text_content()
    assert not switch.is_checked()
    daemon.mqtt.wait_for(state, lambda m: m.text == "OFF", timeout=WAIT_MS / 1000)
    tab.assert_no_errors()
