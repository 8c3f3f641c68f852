"""Executors: a local pool of spawned processes and Ray, each with a worker killed in the middle
of a run (the run is retried, nothing is lost), and the pool's workers stopped with the parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from test_harness import install_faulty, records_of, running, write_spec, zoo_command


def pid_in(marker: Path, timeout: float = 300) -> int:
    """The pid that the ``mortal`` algorithm wrote into ``marker`` (waits for it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if marker.exists() and marker.read_text():
            return int(marker.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"{marker} was not written")


def kill_when_marked(marker: Path, killed: list[int]) -> threading.Thread:
    """A thread that SIGKILLs the process that writes its pid into ``marker``."""

    def kill() -> None:
        pid = pid_in(marker)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def mortal_spec(folder: Path, name: str) -> tuple[Path, Path]:
    marker = folder / f"{name}.marker"
    return write_spec(folder, name, extra=f'[algorithms.mortal]\nmeta_batch = 4\nmarker = "{marker}"\n'), marker


@pytest.fixture
def faulty(tmp_path_factory, monkeypatch) -> Path:
    site = install_faulty(tmp_path_factory)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_pool_retries_a_run_whose_worker_was_killed_and_records_the_others(zoo, faulty, tmp_path):
    spec, marker = mortal_spec(tmp_path, "pool")
    killed: list[int] = []
    killer = kill_when_marked(marker, killed)
    code, stdout, stderr = zoo("bench", "--workers", "2", "--algos", "mortal,fomaml,raiser", "--benchmark", str(spec),
                               "--out", str(tmp_path / "out"))
    killer.join(5)
    assert code == 1 and "1 of 3 run(s) failed: raiser seed 0" in stderr, stderr
    assert killed and "2 worker processes, 1 torch thread(s) each" in stderr
    assert "pool: mortal seed 0: worker process died (killed by SIGKILL); running it again (1/2)" in stderr
    records = {r["algorithm"]: r for r in records_of(tmp_path / "out").values()}
    assert records["mortal"]["status"] == "ok" and records["fomaml"]["status"] == "ok"
    assert records["raiser"]["error"] == "RuntimeError: faulty plugin: the inner update exploded"
    assert "failed: RuntimeError" in stdout and not list(tmp_path.glob("out/*/runs/*.lock"))


def test_sigterm_stops_the_pool_workers_and_releases_the_claims(faulty, tmp_path):
    spec, marker = mortal_spec(tmp_path, "stop")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(faulty), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen(zoo_command("bench", "--workers", "2", "--algos", "mortal", "--benchmark", str(spec),
                                          "--out", str(tmp_path / "out")),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        worker = pid_in(marker)  # the worker is now in the middle of the run
        parent.send_signal(signal.SIGTERM)
        _, stderr = parent.communicate(timeout=30)
    finally:
        parent.kill()
    assert parent.returncode == 130 and stderr.endswith("\nzoo: interrupted\n"), stderr
    assert not running(worker)
    assert not list(tmp_path.glob("out/*/runs/*.lock")) and not list(tmp_path.glob("out/*/runs/*.json"))


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A Ray started by this test module on 127.0.0.1 only, with the faulty plugin on its
    workers' path; shut down afterwards (and nothing else)."""
    site = install_faulty(tmp_path_factory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a single-machine Ray: loopback only
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        patch.syspath_prepend(str(site))
        ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'metazoo[ray]')")
        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Unix socket paths must be short
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
        try:
            assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
            yield ray
        finally:
            ray.shutdown()


def test_ray_retries_a_run_whose_worker_was_killed(zoo, local_ray, tmp_path):
    spec, marker = mortal_spec(tmp_path, "rayed")
    killed: list[int] = []
    killer = kill_when_marked(marker, killed)
    code, stdout, stderr = zoo("bench", "--executor", "ray", "--algos", "mortal,fomaml", "--benchmark", str(spec),
                               "--out", str(tmp_path / "out"))
    killer.join(5)
    assert code == 0, stderr
    assert killed and "Ray, 2 at once" in stderr, stderr
    records = {r["algorithm"]: r for r in records_of(tmp_path / "out").values()}
    assert records["mortal"]["status"] == "ok" and records["fomaml"]["status"] == "ok"
    assert len(records["mortal"]["test"]["per_task"]) == 20
    assert json.loads(marker.read_text()) == killed[0]
    assert local_ray.is_initialized()  # a Ray the bench did not start is left running


def test_workers_build_the_parents_plugin_set_and_check_the_run_key(monkeypatch, tmp_path):
    from metazoo.benchmark import load_benchmark
    from metazoo.errors import ZooError
    from metazoo.executors import Job, WorkerContext, run_job
    from metazoo.manager import Zoo, get_plugin_manager
    from metazoo.run import Run

    zoo = Zoo(get_plugin_manager(blocked=["anil"]))
    context = WorkerContext.of(zoo, "cpu", "/data")
    assert context.blocked == ("anil",) and context.autoload and context.data_dir == "/data"
    monkeypatch.setenv("METAZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert not WorkerContext.of(zoo, "cpu").autoload

    job = Job.of(Run(load_benchmark(write_spec(tmp_path, "keys")), zoo.algorithms.get("fomaml"), 0))
    with pytest.raises(ZooError, match="another run key than the parent's"):
        run_job(Job(job.benchmark, job.algorithm, job.seed, "0" * 12), context)
    with pytest.raises(ZooError, match="unknown algorithm 'anil'"):
        run_job(Job(job.benchmark, "anil", 0, job.key), context)


def test_ray_executor_without_ray_says_how_to_install_it(zoo, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)  # restored after the test
    code, _, stderr = zoo("bench", "--executor", "ray", "--algos", "fomaml", "--benchmark",
                          str(write_spec(tmp_path, "noray")), "--out", str(tmp_path))
    assert code == 2 and "--executor ray needs Ray: pip install 'metazoo[ray]'" in stderr
