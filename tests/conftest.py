"""Shared fixtures: running the CLI in-process, and third-party plugin packages installed
into throw-away folders (never into the test environment itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

THIRDPARTY = Path(__file__).parent / "thirdparty"


@pytest.fixture(scope="session", autouse=True)
def decoded_data_cache(tmp_path_factory):
    """One dataset-decode cache for the whole test session (and the subprocesses it starts)."""
    previous = os.environ.get("METAZOO_CACHE")
    os.environ["METAZOO_CACHE"] = str(tmp_path_factory.mktemp("metazoo-cache"))
    yield
    if previous is None:
        del os.environ["METAZOO_CACHE"]
    else:
        os.environ["METAZOO_CACHE"] = previous


@pytest.fixture(scope="module")
def host():
    """The plugin host with the built-in plugins only (no third-party entry points)."""
    import metazoo

    return metazoo.Zoo(metazoo.get_plugin_manager(autoload=False))


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def zoo(capsys):
    """Run ``zoo ARGS`` in-process; returns (exit status, stdout, stderr)."""
    from metazoo.cli import main

    def run(*args: str):
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _install(name: str, target: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(THIRDPARTY / name)],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture(scope="session")
def toy_plugin(tmp_path_factory) -> Path:
    """A folder holding the installed ``metazoo-toy`` distribution (entry point ``toy``)."""
    return _install("toy", tmp_path_factory.mktemp("toy-site"))


@pytest.fixture(scope="session")
def clash_plugin(tmp_path_factory) -> Path:
    """A folder holding the installed ``metazoo-clash`` distribution, which re-registers maml."""
    return _install("clash", tmp_path_factory.mktemp("clash-site"))


@pytest.fixture
def zoo_process():
    """Run the installed ``zoo`` console script in a subprocess with extra site folders."""

    def run(*args: str, sites: tuple[Path, ...] = (), env: dict[str, str] | None = None):
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(s) for s in sites] + [environment.get("PYTHONPATH", "")]
        ).strip(os.pathsep)
        zoo_script = Path(sys.executable).parent / "zoo"
        return subprocess.run([str(zoo_script), *args], capture_output=True, text=True, env=environment,
                              timeout=600)

    return run
