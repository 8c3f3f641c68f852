"""Data-parallel meta-training: two gloo processes on loopback match one process on the whole
meta-batch (float64, even and uneven splits), and ``python -m metazoo.train`` end to end."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from metazoo.train import shard_bounds

STEPS = 3
CASES = {  # name: (algorithm, suite, hyperparameters)
    "maml-uneven-chunked": ("maml", "sinusoid", {"meta_batch": 5, "chunk_size": 2, "outer_optimizer": "sgd",
                                                 "outer_lr": 0.1}),
    "maml-even-adam": ("maml", "sinusoid", {"meta_batch": 4}),
    "protonet-uneven": ("protonet", "hyperplanes", {"meta_batch": 5, "outer_optimizer": "sgd", "outer_lr": 0.5}),
}
LOOPBACK = {"GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}


def _learner_and_batches(case: str):
    from metazoo.manager import Zoo, get_plugin_manager

    algorithm, suite_name, hyperparameters = CASES[case]
    zoo = Zoo(get_plugin_manager(autoload=False))
    suite = zoo.suites.get(suite_name).factory()
    torch.manual_seed(0)
    learner = zoo.algorithms.get(algorithm).factory(suite.make_model(), suite, **hyperparameters)
    learner = learner.to(torch.float64)
    generator = torch.Generator().manual_seed(1)
    batches = [suite.sample("train", learner.config.meta_batch, generator).to("cpu", torch.float64)
               for _ in range(STEPS)]
    return learner, batches


def _worker(rank: int, world: int, init_method: str, out: str) -> None:
    """One process of the data-parallel group: train every case, save parameters and shard sizes."""
    import torch.distributed as dist
    from metazoo.train import data_parallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        for case in CASES:
            learner, batches = _learner_and_batches(case)
            seen: list[int] = []
            step = learner.meta_train_step

            def counted(batch, step=step, seen=seen):
                seen.append(batch.num_tasks)  # the tasks this rank trains on
                return step(batch)

            learner.meta_train_step = counted
            data_parallel(learner, rank, world)
            losses = [learner.meta_train_step(batch)["loss"] for batch in batches]
            torch.save({"state": learner.state_dict(), "seen": seen, "losses": losses},
                       Path(out) / f"{case}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _stop(processes: list) -> None:
    """Kill whichever of the processes this test started is still running, and reap it."""
    for process in processes:
        if isinstance(process, subprocess.Popen):
            if process.poll() is None:
                process.kill()
            process.wait()
        else:
            if process.is_alive():
                process.kill()
            process.join()


@pytest.mark.parametrize(("tasks", "world", "expected"), [
    (5, 2, [(0, 3), (3, 5)]),
    (4, 2, [(0, 2), (2, 4)]),
    (7, 3, [(0, 3), (3, 5), (5, 7)]),
    (2, 2, [(0, 1), (1, 2)]),
])
def test_shards_are_contiguous_and_cover_the_batch(tasks, world, expected):
    assert [shard_bounds(tasks, rank, world) for rank in range(world)] == expected


def test_two_processes_match_one_process_on_the_whole_batch(tmp_path, monkeypatch):
    for name, value in LOOPBACK.items():
        monkeypatch.setenv(name, value)
    init_method = f"file://{tmp_path / 'rendezvous'}"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(rank, 2, init_method, str(tmp_path)))
                 for rank in range(2)]
    try:
        for process in processes:
            process.start()
        deadline = time.monotonic() + 120
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        assert [p.exitcode for p in processes] == [0, 0]
    finally:
        _stop(processes)

    for case in CASES:
        reference, batches = _learner_and_batches(case)
        initial = {k: v.clone() for k, v in reference.state_dict().items()}
        losses = [reference.meta_train_step(batch)["loss"] for batch in batches]
        ranks = [torch.load(tmp_path / f"{case}-rank{rank}.pt") for rank in range(2)]
        meta_batch = reference.config.meta_batch
        assert [r["seen"] for r in ranks] == [[(meta_batch + 1) // 2] * STEPS, [meta_batch // 2] * STEPS], case
        assert ranks[0]["losses"] == ranks[1]["losses"], case
        assert ranks[0]["losses"] == pytest.approx(losses, rel=1e-12, abs=0), case
        for name, expected in reference.state_dict().items():
            assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), (case, name)
            torch.testing.assert_close(ranks[0]["state"][name], expected, rtol=1e-12, atol=1e-14,
                                       msg=lambda m, case=case, name=name: f"{case} {name}: {m}")
        assert any(not torch.equal(v, initial[k]) for k, v in reference.state_dict().items()), case


QUICK_SPEC = """
suite = "sinusoid"
[evaluation]
test_tasks = 10
val_tasks = 5
[training]
steps = 4
val_every = 2
[algorithms.maml]
meta_batch = 5
outer_lr = 0.01
"""


def test_metazoo_train_end_to_end_matches_a_single_process_run(tmp_path):
    from metazoo.benchmark import load_benchmark
    from metazoo.manager import Zoo, get_plugin_manager
    from metazoo.run import Run, execute

    spec = tmp_path / "quick.toml"
    spec.write_text(QUICK_SPEC)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "metazoo.train", "--benchmark", str(spec), "--algo", "maml", "--seed", "3",
               "--out", str(out), "--init-method", f"file://{tmp_path / 'rendezvous'}"]
    processes = []
    try:
        for rank in range(2):
            env = {**os.environ, **LOOPBACK, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True))
        outputs = [p.communicate(timeout=120) for p in processes]
        assert [p.returncode for p in processes] == [0, 0], outputs
    finally:
        _stop(processes)
    assert "on 2 processes: mse" in outputs[0][1]

    record = json.loads(next((out / "quick" / "runs").glob("maml-seed3-*.json")).read_text())
    assert record["status"] == "ok" and record["data_parallel"] == {"world_size": 2, "backend": "gloo"}
    zoo = Zoo(get_plugin_manager(autoload=False))
    run = Run(load_benchmark(spec), zoo.algorithms.get("maml"), 3)
    single = execute(run, zoo, torch.device("cpu"))
    assert record["key"] == single["key"]
    assert record["train"]["steps"] == single["train"]["steps"] == 4
    assert [v["step"] for v in record["validation"]] == [2, 4]
    assert [v["value"] for v in record["validation"]] == pytest.approx([v["value"] for v in single["validation"]],
                                                                        rel=1e-4)
    assert record["test"]["per_task"] == pytest.approx(single["test"]["per_task"], rel=1e-4)
