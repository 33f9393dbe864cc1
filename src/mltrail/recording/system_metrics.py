"""System metrics (CPU, memory, disk, network, GPU) sampled in the background as ``system/``.

The sampling itself is MLflow's (its CPU, disk, network and GPU monitors); the samples go
through the Trail, so they are batched, retried and spooled like every other metric.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

logger = logging.getLogger("mltrail.system_metrics")


def _monitors() -> list[Any]:
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

    monitors: list[Any] = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
    if not _no_nvidia_driver():
        try:
            from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

            monitors.append(GPUMonitor())
        except Exception:
            logger.debug("no NVIDIA GPU monitor", exc_info=True)
    return monitors


def _no_nvidia_driver() -> bool:
    """Whether this machine certainly has no NVIDIA driver loaded (Linux lists it in /proc):
    the GPU monitor's import (pynvml, a quarter of a second of CPU) is then skipped."""
    return sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia")


class SystemMonitor:
    """Samples every ``interval`` seconds on a daemon thread and logs through ``trail``."""

    def __init__(self, trail: Any, interval: float) -> None:
        self._trail = trail
        self._interval = max(0.1, float(interval))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._monitors = _monitors()
        self._lock = threading.Lock()
        self.step = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mltrail-system", daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for monitor in self._monitors:
            try:
                monitor.collect_metrics()
                values.update(monitor.aggregate_metrics())
            finally:
                monitor.clear_metrics()
        return values

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                values = self.sample()
            except Exception:
                logger.debug("system metrics sample failed", exc_info=True)
                continue
            self._log(values)

    def _log(self, values: dict[str, float]) -> None:
        # One sample a step: the sampler and stop() may both log the first one.
        with self._lock:
            step, self.step = self.step, self.step + 1
        self._trail.log_metrics({f"system/{k}": v for k, v in values.items()}, step=step)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.step == 0:  # a run shorter than one interval still gets one sample
            try:
                values = self.sample()
            except Exception:
                logger.debug("system metrics sample failed", exc_info=True)
                return
            with self._lock:
                first = self.step == 0  # the sampler may have logged one while we sampled
            if first:
                self._log(values)
