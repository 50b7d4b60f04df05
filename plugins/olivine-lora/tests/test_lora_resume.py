"""A killed training run resumes from its last checkpoint and ends where an unbroken run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lora_helpers import LORA_STEP, workflow

STEPS, EVERY = 120, 10


def _adapter(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow  # kept out of the default run's 15 minutes (tox -e slow runs it)
def test_killed_run_resumes_from_its_checkpoint(base_model: Path, tmp_path: Path) -> None:
    import olivine

    step = {**LORA_STEP, "max_steps": STEPS, "save_steps": EVERY, "logging_steps": 20,
            "learning_rate": 1e-3, "training_args": {"save_total_limit": 2}}  # Olive keeps 1
    wf = workflow(tmp_path, base_model, {"lora": step}, isolation="always")
    config = tmp_path / "wf.json"
    config.write_text(json.dumps(wf))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "olivine", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    state = tmp_path / "cache" / "state"
    deadline = time.monotonic() + 180
    killed_after = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = sorted(state.glob("*/checkpoints/checkpoint-*/trainer_state.json"))
            if len(done) >= 2:  # two checkpoints: well into the run, far from its end
                os.killpg(proc.pid, signal.SIGKILL)
                killed_after = max(int(p.parent.name.split("-")[1]) for p in done)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_after is not None and killed_after < STEPS, "the run ended before the kill"
    assert not list((tmp_path / "cache" / "steps").iterdir())  # nothing cached from the killed run
    result = olivine.run(wf)  # the same step again: same key, same state folder
    record = json.loads((Path(result.output_dir) / "olivine_training.json").read_text())
    assert record["resumed_from_step"] is not None
    assert killed_after <= record["resumed_from_step"] < STEPS
    assert record["steps"] == STEPS
    assert not any(state.iterdir())  # checkpoints removed once the step succeeded
    resumed = _adapter(Path(result.output_dir))
    unbroken_dir = tmp_path / "unbroken"
    unbroken = olivine.run(workflow(unbroken_dir, base_model, {"lora": step}))
    reference = _adapter(Path(unbroken.output_dir))
    assert set(resumed) == set(reference)
    for name, value in reference.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
