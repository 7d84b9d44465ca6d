"""Runs ``fit`` once in this fresh process and prints its driver's memory as one JSON line.

    python tools/fit_probe.py FIT_MODULE_OR_FILE STORE OUT

``FIT_MODULE_OR_FILE`` is a module path (``workflows.fit``) or a ``.py`` file (another revision's
``workflows/fit.py``, written out by ``bench_cluster.py fit-memory --baseline-ref``). Resident
memory is sampled every 20 ms while the fit runs. Used by ``tools/bench_cluster.py``.
"""


from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
import time
from types import ModuleType

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def load_fit(target: str) -> ModuleType:
    """The fit module: imported by module path, or loaded from another revision's file."""
    if not target.endswith(".py"):
        return importlib.import_module(target)
    spec = importlib.util.spec_from_file_location("fit_under_test", target)
    fit = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fit  # pydantic resolves the config's annotations through it
    spec.loader.exec_module(fit)
    return fit


def main(target: str, store: str, out: str) -> dict:
    from workflows.platform.raycluster import RayConfig, init_ray

    fit = load_fit(target)
    init_ray(RayConfig(num_cpus=2, progress_bars=False))
    cfg = fit.FitConfig.from_dict({"mlflow": {"enabled": False}})
    base = rss()
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    tic = time.perf_counter()
    summary = fit.run(store, out, cfg)
    done.set()
    return {"baseline_mb": base / 2**20, "peak_mb": peak[0] / 2**20, "growth_mb": (peak[0] - base) / 2**20,
            "seconds": time.perf_counter() - tic, "clips": summary["clips"],
            "train_frames": summary["train_frames"]}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
