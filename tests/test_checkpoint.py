"""Runs of hours survive being killed: a run SIGKILLed mid-way and started again by the same
command resumes from its checkpoint and ends with the record an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

SPEC = ('suite = "sinusoid"\n[evaluation]\ntest_tasks = 30\nval_tasks = 10\n[training]\nsteps = 400\n'
        "val_every = 100\n[algorithms.maml]\nmeta_batch = 4\n")


def _bench(spec: Path, out: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "zoo"), "bench", "--benchmark", str(spec), "--algos", "maml",
            "--out", str(out), "--checkpoint-every", "0", "-q"]


def _checkpointed_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["loop"]["step"]
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return -1


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path):
    spec = tmp_path / "resume.toml"
    spec.write_text(SPEC)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(_bench(spec, tmp_path / "whole"), env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    process = subprocess.Popen(_bench(spec, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            ckpts = list((out / "resume" / "runs").glob("*.ckpt")) if (out / "resume" / "runs").exists() else []
            if ckpts and 150 <= _checkpointed_step(ckpts[0]) < 390:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    (ckpt,) = (out / "resume" / "runs").glob("*.ckpt")
    killed_at = _checkpointed_step(ckpt)
    assert not list((out / "resume" / "runs").glob("*.json"))

    again = subprocess.run(_bench(spec, out), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    (resumed_path,) = (out / "resume" / "runs").glob("*.json")
    (whole_path,) = (tmp_path / "whole" / "resume" / "runs").glob("*.json")
    resumed, uninterrupted = json.loads(resumed_path.read_text()), json.loads(whole_path.read_text())
    assert resumed["train"]["resumed_at_steps"] == [killed_at] and killed_at >= 150
    assert resumed["key"] == uninterrupted["key"] and resumed["train"]["steps"] == 400
    assert [v["value"] for v in resumed["validation"]] == [v["value"] for v in uninterrupted["validation"]]
    assert resumed["test"]["per_task"] == uninterrupted["test"]["per_task"]
    assert resumed["best_step"] == uninterrupted["best_step"]
    assert not list((out / "resume" / "runs").glob("*.ckpt"))  # removed with the record written
