"""The loop's counters and timings, in bounded memory, and their periodic snapshot."""

from __future__ import annotations

import os
import time

import numpy as np


class Ring:
    """The last ``size`` samples in a preallocated array: bounded memory, no per-frame list."""

    __slots__ = ("_buf", "count", "total")

    def __init__(self, size: int = 512) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self.count = 0  # every sample ever added
        self.total = 0.0  # their sum (a Prometheus summary's _sum)

    def add(self, value: float) -> None:
        self._buf[self.count % self._buf.shape[0]] = value
        self.count += 1
        self.total += value

    def summary(self) -> dict[str, float | int | None]:
        """p50 and p95 of the recent samples, and the count and sum of all of them."""
        p50, p95 = self.percentiles(50, 95)
        return {"p50": p50, "p95": p95, "count": self.count, "sum": round(self.total, 3)}

    def percentiles(self, *qs: float) -> list[float | None]:
        n = min(self.count, self._buf.shape[0])
        if n == 0:
            return [None for _ in qs]
        values = np.percentile(self._buf[:n], qs)
        return [round(float(v), 2) for v in values]


def rss_mb() -> float | None:
    """Resident memory from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class FrameRate:
    """Frames per second over the last few seconds, for STATUS: sampled once a second.

    The loop calls `sample` when `due`; between samples it costs one comparison per tick.
    The rate is measured from ``window`` samples ago (from the start until there are that
    many), so it shows after the first second and does not flap with one late frame; it
    is rounded to one decimal, so it changes (and STATUS is sent) at most once a second.
    """

    __slots__ = ("_frames", "_n", "_times", "every", "next_at", "value")

    def __init__(self, now: float, window: int = 5, every: float = 1.0) -> None:
        self.every = every
        self.next_at = now + every
        self.value: float | None = None  # None until the first second has passed
        # A ring of window + 1 (time, frames) marks, all the start until overwritten.
        self._times = [now] * (window + 1)
        self._frames = [0] * (window + 1)
        self._n = 0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def sample(self, now: float, frames: int) -> bool:
        """Take this second's mark; True when the rounded rate changed."""
        self._n += 1
        size = len(self._times)
        self._times[self._n % size] = now
        self._frames[self._n % size] = frames
        oldest = (self._n + 1) % size
        wall = max(now - self._times[oldest], 1e-9)
        value = round((frames - self._frames[oldest]) / wall, 1)
        self.next_at = now + self.every
        changed = value != self.value
        self.value = value
        return changed


class Mark:
    """Where a reader's last snapshot left off, so rates cover the time since *its* last
    look: the periodic report and the web page's live view each keep their own."""

    __slots__ = ("cpu", "frames", "time")

    def __init__(self, now: float, frames: int = 0) -> None:
        self.time = now
        self.frames = frames
        self.cpu = time.process_time()


class Stats:
    """Counters the loop keeps; `snapshot` turns them into the stats dict."""

    def __init__(self, target_fps: float, now: float) -> None:
        self.target_fps = target_fps
        self.started = now
        self.frames = 0  # frames processed (new frame, detection on)
        self.ticks = 0
        self.idle_ticks = 0  # ticks with no new frame
        self.output_errors = 0
        self.pipeline_errors = 0
        self.latency = Ring()  # tick start -> outputs done
        self.wait = Ring()  # tick start -> frame in hand (waiting for the camera)
        self.detect = Ring()
        self.classify = Ring()
        self.recent = FrameRate(now)  # for STATUS, from the first second
        self.mark = Mark(now)  # the periodic report's

    def snapshot(self, now: float, skipped: int, mark: Mark | None = None) -> dict[str, object]:
        """The stats dict; fps and CPU cover the time since ``mark`` (default: the periodic
        report's), which moves to now."""
        mark = mark or self.mark
        cpu_now = time.process_time()
        wall = max(now - mark.time, 1e-9)
        fps = round((self.frames - mark.frames) / wall, 2)
        cpu = round(100.0 * (cpu_now - mark.cpu) / wall, 1)
        mark.time, mark.frames, mark.cpu = now, self.frames, cpu_now
        latency = self.latency.summary()
        return {
            "fps": fps,
            "target_fps": self.target_fps,
            "frames": self.frames,
            "ticks": self.ticks,
            "idle_ticks": self.idle_ticks,
            "skipped_ticks": skipped,
            "latency_ms": latency,
            "wait_ms": dict(zip(("p50", "p95"), self.wait.percentiles(50, 95), strict=True)),
            "detect_ms": self.detect.summary(),
            "classify_ms": self.classify.summary(),
            "cpu_percent": cpu,
            "rss_mb": rss_mb(),
            "uptime_s": round(now - self.started, 1),
            "output_errors": self.output_errors,
            "pipeline_errors": self.pipeline_errors,
        }
