"""The spread of every comparative quality claim across seeds, thread counts and CPU kernels.

The tests marked ``quality`` train tiny models, quantize or finetune them and compare
scores (KL divergence to the float model, perplexity, cosine, loss). Their numbers move
with the training seed, torch's thread count and the SIMD kernels torch picks
(``ATEN_CPU_CAPABILITY``): another CPU is another model. This script runs the marked
tests once per configuration, each in a fresh model cache:

- every seed x every kernel (``default``, ``avx2``, ``avx512``) at one thread, and
- every seed at two threads with the kernels torch picks itself,

collects what each test recorded (``olivine.testing.record_quality``) and prints, per
claim, the minimum, median and maximum over the runs, and which tests failed where. The
margins in the assertions are chosen from this report; the tests quote it.

    python benchmarks/quality_spread.py --work /tmp/spread --jobs 2
    python benchmarks/quality_spread.py --work /tmp/spread --report-only   # re-read the logs

A run whose folder already holds a finished log is not repeated (``--fresh`` repeats it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def configurations(seeds: list[int], kernels: list[str], threads: list[int]) -> list[dict[str, Any]]:
    """The grid: seeds x kernels at one thread, and seeds at each other thread count (native kernels)."""
    grid = [{"seed": s, "kernel": k, "threads": 1} for s in seeds for k in kernels]
    grid += [{"seed": s, "kernel": "native", "threads": t} for s in seeds for t in threads if t != 1]
    return grid


def name_of(cfg: dict[str, Any]) -> str:
    """A folder name for one configuration."""
    return f"seed{cfg['seed']}-{cfg['kernel']}-t{cfg['threads']}"


def run_one(cfg: dict[str, Any], work: Path, pytest_args: list[str], fresh: bool) -> dict[str, Any]:
    """Run the quality tests under ``cfg``; return its outcome (from the logs when already done)."""
    folder = work / name_of(cfg)
    done = folder / "done.json"
    if done.is_file() and not fresh:
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("quality.jsonl", "junit.xml", "pytest.log"):
        (folder / stale).unlink(missing_ok=True)
    env = dict(os.environ)
    n = str(cfg["threads"])
    env.update(
        {
            "OLIVINE_TEST_SEED": str(cfg["seed"]),
            "OLIVINE_TEST_THREADS": n,
            "OMP_NUM_THREADS": n,
            "MKL_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n,
            "OLIVINE_TEST_CACHE": str(folder / "models"),
            "OLIVINE_QUALITY_LOG": str(folder / "quality.jsonl"),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.pop("ATEN_CPU_CAPABILITY", None)
    if cfg["kernel"] != "native":
        env["ATEN_CPU_CAPABILITY"] = cfg["kernel"]
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
    )
    t0 = time.perf_counter()
    with (folder / "pytest.log").open("w") as log:
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "-m",
                "quality",
                "--basetemp",
                str(folder / "tmp"),
                "--junitxml",
                str(folder / "junit.xml"),
                *pytest_args,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    outcome = {
        "config": cfg,
        "kernel_used": probe.stdout.strip() or probe.stderr.strip()[-200:],
        "exit_code": code,
        "seconds": round(time.perf_counter() - t0, 1),
        "tests": _junit(folder / "junit.xml"),
    }
    done.write_text(json.dumps(outcome, indent=2))
    return outcome


def _junit(path: Path) -> dict[str, str]:
    """``{test id: passed|failed|skipped}`` from a junit file."""
    if not path.is_file():
        return {}
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        status = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            status = "failed"
        elif case.find("skipped") is not None:
            status = "skipped"
        out[test] = status
    return out


def collect(work: Path, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per claim and number: the values of every run; per test: where it failed."""
    values: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        log = work / name_of(outcome["config"]) / "quality.jsonl"
        if not log.is_file():
            continue
        for line in log.read_text().splitlines():
            row = json.loads(line)
            claim = row.pop("claim")
            for key, value in row.items():
                values[f"{claim}.{key}"].append(value)
    failures: dict[str, list[str]] = defaultdict(list)
    for outcome in outcomes:
        for test, status in outcome["tests"].items():
            if status == "failed":
                failures[test].append(name_of(outcome["config"]))
    return {"values": dict(values), "failures": dict(failures)}


def render(outcomes: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = [
        "# Quality claims: spread over seeds, threads and torch CPU kernels",
        "",
        "| run | kernel used | exit | seconds | failed tests |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        failed = sum(s == "failed" for s in o["tests"].values())
        lines.append(
            f"| {name_of(o['config'])} | {o['kernel_used']} | {o['exit_code']} | {o['seconds']} "
            f"| {failed} of {len(o['tests'])} |"
        )
    lines += ["", "| claim.number | runs | min | median | max |", "| --- | --- | --- | --- | --- |"]
    for key in sorted(summary["values"]):
        v = summary["values"][key]
        lines.append(f"| {key} | {len(v)} | {min(v):.4g} | {statistics.median(v):.4g} | {max(v):.4g} |")
    if summary["failures"]:
        lines += ["", "Failed tests:"]
        for test, where in sorted(summary["failures"].items()):
            lines.append(f"- {test}: {', '.join(where)}")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the grid (or re-read it) and print the report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/olivine-quality-spread"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kernels", nargs="+", default=["default", "avx2", "avx512"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each uses its thread count)")
    parser.add_argument("--fresh", action="store_true", help="repeat runs that already finished")
    parser.add_argument("--report-only", action="store_true", help="only re-read finished runs")
    parser.add_argument(
        "pytest_args", nargs="*", default=["tests"], help="what pytest collects (default: tests)"
    )
    args = parser.parse_args()
    grid = configurations(args.seeds, args.kernels, args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        outcomes = [
            json.loads((args.work / name_of(c) / "done.json").read_text())
            for c in grid
            if (args.work / name_of(c) / "done.json").is_file()
        ]
    else:

        def one(cfg: dict[str, Any]) -> dict[str, Any]:
            out = run_one(cfg, args.work, args.pytest_args, args.fresh)
            print(
                f"{name_of(cfg)}: exit {out['exit_code']} in {out['seconds']} s "
                f"(kernel {out['kernel_used']})",
                flush=True,
            )
            return out

        # the two-thread runs go last, alone, so that they have both cores
        single = [c for c in grid if c["threads"] == 1]
        multi = [c for c in grid if c["threads"] != 1]
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            outcomes = list(pool.map(one, single))
        outcomes += [one(c) for c in multi]
    summary = collect(args.work, outcomes)
    report = render(outcomes, summary)
    (args.work / "spread.md").write_text(report)
    (args.work / "spread.json").write_text(json.dumps({"runs": outcomes, **summary}, indent=2))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
