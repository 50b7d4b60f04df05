"""How much time the host itself costs: `olivine --help` and a trivial workflow run.

Each command runs in a fresh process (what a user pays), N times; we report the
median and the spread. Targets (issue #2, this 2-core machine): --help under
0.5 s, a no-op workflow under 1.5 s.

    python benchmarks/host_overhead.py [--repeat 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def summarize(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=10) if len(samples) >= 2 else samples * 9
    return {"median_s": round(statistics.median(samples), 4), "p10_s": round(qs[0], 4),
            "p90_s": round(qs[-1], 4), "n": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    olivine = [sys.executable, "-m", "olivine"]
    work = Path(tempfile.mkdtemp(prefix="olivine-bench-"))
    try:
        config = work / "wf.json"
        base = {"input_model": {"type": "ONNXModel",
                                "model_path": str(REPO / "examples/hello/model")},
                "passes": {"stamp": {"type": "OnnxMetadata", "doc_string": "bench"}},
                "log_severity_level": 4}
        results = {"help": summarize([timed([*olivine, "--help"], env) for _ in range(args.repeat)])}
        cold, warm = [], []
        for i in range(args.repeat):
            cfg = {**base, "output_dir": str(work / f"out{i}"), "cache_dir": str(work / f"cache{i}")}
            config.write_text(json.dumps(cfg))
            cold.append(timed([*olivine, "run", "--config", str(config)], env))
            warm.append(timed([*olivine, "run", "--config", str(config)], env))
        results["workflow_uncached"] = summarize(cold)
        results["workflow_cached"] = summarize(warm)
        results["python_startup"] = summarize(
            [timed([sys.executable, "-c", "pass"], env) for _ in range(args.repeat)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, r in results.items():
            print(f"{name:<20} median {r['median_s'] * 1000:7.1f} ms  "
                  f"(p10 {r['p10_s'] * 1000:.1f}, p90 {r['p90_s'] * 1000:.1f}, n={r['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
