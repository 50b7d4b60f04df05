"""olivine.fastexit: leaving without the interpreter's teardown keeps what sys.exit guarantees."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import atexit, concurrent.futures, logging, sys, threading, time
    from pathlib import Path
    from olivine.fastexit import exit_now

    out = Path(sys.argv[1])
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    log = logging.getLogger("fastexit-test")
    log.addHandler(logging.FileHandler(out / "log.txt"))
    log.warning("logged before exit")

    def late():
        time.sleep(0.3)
        (out / "thread").write_text("finished")

    threading.Thread(target=late).start()  # not a daemon: the exit waits for it
    pool = concurrent.futures.ThreadPoolExecutor(1)  # never shut down
    pool.submit(lambda: (out / "pool").write_text("done"))
    sys.stdout.write("buffered, no newline")
    exit_now(3)
""")


def test_exit_now_keeps_status_threads_atexit_logs_and_output(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 3
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "finished"
    assert (tmp_path / "pool").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "log.txt").read_text() == "logged before exit\n"


def test_the_cli_exits_with_its_status_and_flushed_output(tmp_path: Path) -> None:
    """``python -m olivine`` ends through exit_now: its status and its output are intact."""
    missing = tmp_path / "missing.json"
    done = subprocess.run([sys.executable, "-m", "olivine", "run", "--config", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "missing.json" in done.stderr
    listed = subprocess.run([sys.executable, "-m", "olivine", "plugins"], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.strip()


def _run(tmp_path: Path, body: str, *prefix: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text("import sys\nfrom pathlib import Path\nfrom olivine.fastexit import exit_now\n"
                      + textwrap.dedent(body))
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, *prefix, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env={**environ, **env})


def test_the_teardown_is_skipped_unless_switched_off(tmp_path: Path) -> None:
    """An unclosed file loses its buffer on the fast path (the teardown would have flushed it)."""
    body = """
        f = open(Path(sys.argv[1]) / "unclosed.txt", "w")
        f.write("written at teardown")
        exit_now(0)
    """
    assert _run(tmp_path, body).returncode == 0
    assert (tmp_path / "unclosed.txt").read_text() == ""
    assert _run(tmp_path, body, OLIVINE_FAST_EXIT="0").returncode == 0
    assert (tmp_path / "unclosed.txt").read_text() == "written at teardown"


def test_a_profiler_gets_its_output(tmp_path: Path) -> None:
    done = _run(tmp_path, "exit_now(0)\n", "-m", "cProfile", "-o", str(tmp_path / "out.prof"))
    assert done.returncode == 0
    assert (tmp_path / "out.prof").stat().st_size > 0


def test_native_output_and_other_threads(tmp_path: Path) -> None:
    """printf's buffer reaches a pipe; exit_now from a worker thread ends the process."""
    done = _run(tmp_path, """
        import ctypes, threading
        ctypes.CDLL(None).printf(b"from C\\n")
        worker = threading.Thread(target=exit_now, args=(5,))
        worker.start()
        worker.join()
    """)
    assert done.returncode == 5
    assert done.stdout == "from C\n"
