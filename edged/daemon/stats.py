"""The loop's counters and timings, in bounded memory, and their periodic snapshot."""

from __future__ import annotations

import os
import time

import numpy as np


class Ring:
    """The last ``size`` samples in a preallocated array: bounded memory, no per-frame list."""

    __slots__ = ("_buf", "count")

    def __init__(self, size: int = 512) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self.count = 0

    def add(self, value: float) -> None:
        self._buf[self.count % self._buf.shape[0]] = value
        self.count += 1

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
        self._mark = (now, 0, time.process_time())

    def snapshot(self, now: float, skipped: int) -> dict[str, object]:
        since, frames_then, cpu_then = self._mark
        cpu_now = time.process_time()
        wall = max(now - since, 1e-9)
        self._mark = (now, self.frames, cpu_now)
        p50, p95 = self.latency.percentiles(50, 95)
        return {
            "fps": round((self.frames - frames_then) / wall, 2),
            "target_fps": self.target_fps,
            "frames": self.frames,
            "ticks": self.ticks,
            "idle_ticks": self.idle_ticks,
            "skipped_ticks": skipped,
            "latency_ms": {"p50": p50, "p95": p95},
            "wait_ms": dict(zip(("p50", "p95"), self.wait.percentiles(50, 95), strict=True)),
            "detect_ms": {"p50": self.detect.percentiles(50)[0]},
            "classify_ms": {"p50": self.classify.percentiles(50)[0]},
            "cpu_percent": round(100.0 * (cpu_now - cpu_then) / wall, 1),
            "rss_mb": rss_mb(),
            "uptime_s": round(now - self.started, 1),
            "output_errors": self.output_errors,
            "pipeline_errors": self.pipeline_errors,
        }
