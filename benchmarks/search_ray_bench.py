"""A 12-candidate search: sequential on LocalSystem against RaySystem with 2 workers.

Each candidate runs a step that holds its core for SECONDS (testkit's Sleep, plus a
Scale of the tiny MLP), so the ideal speed-up on 2 workers is 2x. Reports the wall
times, their ratio and Ray's overhead per task:
(ray_wall - sequential_wall / 2) / (12 / 2). Fresh caches for each run; median of
--repeat runs. Needs the testkit plugin (tests/testkit) and olivine-ray installed.

    python benchmarks/search_ray_bench.py [--seconds 1.0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def workflow(folder: Path, seconds: float, ray: bool) -> dict:
    wf = {
        "input_model": {"type": "ONNXModel", "model_path": str(REPO / "examples/hello/model")},
        "passes": {"sleep": {"type": "Sleep", "seconds": [seconds, seconds + 0.001, seconds + 0.002]},
                   "scale": {"type": "Scale", "factor": [0.5, 1.0, 2.0, 4.0]}},
        "evaluators": {"e": {"metrics": [{"name": "w", "type": "weight_stats",
                                          "sub_types": [{"name": "abs_sum", "priority": 1}]}]}},
        "evaluator": "e", "search_strategy": {"sampler": "sequential"},
        "output_dir": str(folder / "out"), "cache_dir": str(folder / "cache"),
        "log_severity_level": 4,
    }
    if ray:
        wf.update(systems={"ray": {"type": "RaySystem", "num_workers": 2, "num_cpus": 1}},
                  host="ray", target="ray")
    return wf


def timed_run(folder: Path, seconds: float, ray: bool) -> float:
    folder.mkdir(parents=True)
    config = folder / "wf.json"
    config.write_text(json.dumps(workflow(folder, seconds, ray)))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "olivine", "run", "--config", str(config)], check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="olivine-ray-bench-"))
    try:
        seq = [timed_run(work / f"seq{i}", args.seconds, False) for i in range(args.repeat)]
        ray = [timed_run(work / f"ray{i}", args.seconds, True) for i in range(args.repeat)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s, r = statistics.median(seq), statistics.median(ray)
    print(f"12 candidates, {args.seconds:.1f} s of work each (runs: {args.repeat}, medians)")
    print(f"  sequential (LocalSystem): {s:6.2f} s")
    print(f"  Ray, 2 workers:           {r:6.2f} s  (includes starting Ray)")
    print(f"  speed-up: {s / r:.2f}x (ideal 2x); overhead per task: {(r - s / 2) / 6:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
