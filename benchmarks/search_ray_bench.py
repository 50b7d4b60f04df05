"""A 12-candidate search: sequential on LocalSystem against RaySystem with 2 workers.

Each candidate's own step waits SECONDS (testkit's Sleep; 12 distinct values, so no
candidate reuses another's cached step) and then scales the tiny MLP, so the ideal
speed-up on 2 workers is 2x. Runs in one process through olivine.run: the first Ray
search includes starting the local Ray instance, later ones reuse it. Reports
medians, the speed-up and Ray's overhead per task:
(ray_wall - sequential_wall / 2) / (12 / 2). Needs tests/testkit and olivine-ray.

    python benchmarks/search_ray_bench.py [--seconds 1.0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def workflow(folder: Path, seconds: float, ray: bool) -> dict[str, Any]:
    wf: dict[str, Any] = {
        "input_model": {"type": "ONNXModel", "model_path": str(REPO / "examples/hello/model")},
        "passes": {"sleep": {"type": "Sleep", "seconds": [seconds + i / 1000 for i in range(12)]},
                   "scale": {"type": "Scale", "factor": 2.0}},
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


def timed(folder: Path, seconds: float, ray: bool) -> float:
    import olivine

    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    result = olivine.run(workflow(folder, seconds, ray))
    assert len(result.report["search"]["candidates"]) == 12
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="olivine-ray-bench-"))
    try:
        seq = [timed(work / f"seq{i}", args.seconds, False) for i in range(args.repeat)]
        first_ray = timed(work / "ray-first", args.seconds, True)
        ray = [timed(work / f"ray{i}", args.seconds, True) for i in range(args.repeat)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s, r = statistics.median(seq), statistics.median(ray)
    print(f"12 candidates, {args.seconds:.1f} s of waiting each ({args.repeat} runs, medians)")
    print(f"  sequential (LocalSystem):     {s:6.2f} s")
    print(f"  Ray, 2 workers, warm:         {r:6.2f} s")
    print(f"  Ray, first run (starts Ray):  {first_ray:6.2f} s")
    print(f"  speed-up (warm): {s / r:.2f}x (ideal 2x); overhead per task: {(r - s / 2) / 6:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
