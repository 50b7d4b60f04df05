"""Check README's promise on a fresh clone: its two commands work with nothing beside the clone.

README.md says that on a fresh machine two commands do all the set-up: the first installs
olivine and runs the main job (``olivine demo``), the second installs and runs the tests.
This script takes both commands from README.md itself (the first two ```bash blocks under
"Two commands"), clones the repository's committed HEAD into a new temporary folder (so
no ``../shared`` lies beside it, as in a user's clone), runs each command there in a clean
shell (no virtual environment of the caller on PATH) and reports both: exit code, time,
and the last lines of output. Exit 0 only when both pass.

    python scripts/check_readme_promise.py                 # both commands, as written
    python scripts/check_readme_promise.py --tox-env py    # the test command's default env only
    python scripts/check_readme_promise.py --keep          # keep the clone for a look

Used before every release; ``tox -e slow`` runs it with ``--tox-env py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands(readme: Path) -> tuple[str, str]:
    """(main job command, test command): the first two bash blocks of the "Two commands" section."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)]
    if len(blocks) < 2:
        raise SystemExit(
            f"{readme}: expected two ```bash blocks under '## Two commands', found {len(blocks)}"
        )
    return blocks[0], blocks[1]


def clean_env() -> dict[str, str]:
    """The caller's environment without its virtual environment (tox's, or an activated one)."""
    env = dict(os.environ)
    venv = env.pop("VIRTUAL_ENV", None)
    prefixes = [p for p in {venv, sys.prefix if sys.prefix != sys.base_prefix else None} if p]
    parts = [
        p
        for p in env.get("PATH", "").split(os.pathsep)
        if not any(p.startswith(str(Path(prefix))) for prefix in prefixes)
    ]
    env["PATH"] = os.pathsep.join(parts)
    for var in (
        "PYTHONPATH",
        "PYTHONHOME",
        "TOX_ENV_NAME",
        "TOX_WORK_DIR",
        "TOX_ENV_DIR",
        "OLIVINE_TEST_CACHE",
        "OLIVINE_CACHE_DIR",
    ):
        env.pop(var, None)
    return env


def run(command: str, cwd: Path, env: dict[str, str], log: Path) -> tuple[int, float]:
    """Run ``command`` with bash in ``cwd``; output to ``log``; return (exit code, seconds)."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
        ).returncode
    return code, time.perf_counter() - t0


def tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main() -> int:
    """Clone, run both commands, report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tox-env", help="append '-e ENV' to the test command (e.g. py: skip lint)")
    parser.add_argument("--skip-main", action="store_true", help="only the test command")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()
    main_cmd, test_cmd = readme_commands(REPO / "README.md")
    if args.tox_env:
        test_cmd += f" -e {args.tox_env}"
    root = Path(tempfile.mkdtemp(prefix="olivine-promise-"))
    clone = root / "olivine"
    results: list[tuple[str, str, int, float, Path]] = []
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
        assert not (clone.parent / "shared").exists()
        print(f"fresh clone of {head} in {clone} (nothing beside it)", flush=True)
        env = clean_env()
        todo = (
            [("test command", test_cmd)]
            if args.skip_main
            else [("main job", main_cmd), ("test command", test_cmd)]
        )
        for label, command in todo:
            print(f"{label}: {command}", flush=True)
            log = root / f"{label.replace(' ', '-')}.log"
            code, seconds = run(command, clone, env, log)
            results.append((label, command, code, seconds, log))
            print(
                f"  exit {code} in {seconds:.0f} s\n"
                + "\n".join(f"  | {line}" for line in tail(log).splitlines()),
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept: {root}")
    print("\nREADME promise:")
    for label, _, code, seconds, _ in results:
        print(f"  {label}: {'passed' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
    return 0 if results and all(code == 0 for _, _, code, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
