"""The plugin system: built-ins, third-party entry points, blocking, clashes, registries."""

from __future__ import annotations

import json
import os
import types

import metazoo
import pytest
import torch
from metazoo.errors import PluginError, UsageError
from metazoo.manager import BUILTIN_PLUGINS, Zoo, get_plugin_manager


def test_builtins_register_every_algorithm_and_suite():
    zoo = Zoo(get_plugin_manager(autoload=False))
    assert {"maml", "fomaml", "reptile", "metasgd", "anil"} <= set(zoo.algorithms.names())
    assert {"sinusoid", "hyperplanes"} <= set(zoo.suites.names())
    assert zoo.algorithms.get("maml").family == "model-algorithm"
    assert zoo.algorithms.get("maml").source.startswith("plugin maml (metazoo")
    assert [p.name for p in zoo.plugins()] == list(BUILTIN_PLUGINS)


def test_blocking_a_builtin_removes_its_entries():
    zoo = Zoo(get_plugin_manager(blocked=["reptile"], autoload=False))
    assert "reptile" not in zoo.algorithms
    assert "maml" in zoo.algorithms


def test_shell_patterns_select_in_order_and_unknown_names_list_choices():
    zoo = Zoo(get_plugin_manager(autoload=False))
    assert [e.name for e in zoo.algorithms.select(["*maml", "anil"])] == ["fomaml", "imaml", "maml", "protomaml", "anil"]
    with pytest.raises(UsageError, match=r"unknown algorithm 'mamba'; available: anil, (\w+, )*fomaml, (\w+, )*maml, "):
        zoo.algorithms.select(["mamba"])


def test_misspelt_hook_is_an_error():
    class Sloppy:
        @metazoo.hookimpl
        def zoo_register_algorithm(self, registry):  # missing "s"
            pass

    pm = get_plugin_manager(autoload=False)
    pm.register(Sloppy(), name="sloppy")
    with pytest.raises(Exception, match="zoo_register_algorithm"):
        pm.check_pending()


def test_clash_between_two_plugins_names_both():
    class Copycat:
        @metazoo.hookimpl
        def zoo_register_suites(self, registry):
            registry.add("sinusoid", object)

    pm = get_plugin_manager(autoload=False)
    pm.register(Copycat(), name="copycat")
    with pytest.raises(PluginError, match=r"'sinusoid' is registered by both plugin sinusoid .* and plugin copycat"):
        _ = Zoo(pm).suites


def test_third_party_entry_point_is_loaded(toy_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_plugin))
    zoo = Zoo(get_plugin_manager())
    entry = zoo.algorithms.get("signmaml")
    assert entry.source == "plugin toy (metazoo-toy 0.3.1)"
    assert entry.version == "0.3.1"
    assert "lines" in zoo.suites
    assert "toy" in [p.name for p in zoo.plugins()]


def test_autoload_can_be_turned_off(toy_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(toy_plugin))
    monkeypatch.setenv("METAZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "signmaml" not in Zoo(get_plugin_manager()).algorithms


def test_installed_plugin_shows_in_list_and_runs_in_bench(toy_plugin, zoo_process, tmp_path):
    listed = zoo_process("list", sites=(toy_plugin,))
    assert listed.returncode == 0, listed.stderr
    assert "signmaml" in listed.stdout and "metazoo-toy 0.3.1" in listed.stdout
    assert "lines" in listed.stdout
    plugins = zoo_process("plugins", sites=(toy_plugin,))
    assert "toy" in plugins.stdout and "zoo_register_algorithms, zoo_register_suites" in plugins.stdout

    ran = zoo_process("bench", "--algos", "signmaml,maml", "--suite", "lines", "--steps", "30",
                      "--out", str(tmp_path), "--quiet", sites=(toy_plugin,))
    assert ran.returncode == 0, ran.stderr
    assert "signmaml" in ran.stdout and "maml" in ran.stdout
    assert len(list((tmp_path / "lines" / "runs").glob("*.json"))) == 2


def test_clash_with_builtin_fails_naming_both(clash_plugin, zoo_process):
    result = zoo_process("list", sites=(clash_plugin,))
    assert result.returncode == 1
    assert "plugin maml (metazoo" in result.stderr
    assert "plugin clash (metazoo-clash 1.0.0)" in result.stderr
    assert "Traceback" not in result.stderr
    blocked = zoo_process("-p", "no:clash", "list", sites=(clash_plugin,))
    assert blocked.returncode == 0, blocked.stderr




class FineTune(metazoo.MetaLearner):
    """A baseline written against the public contract the obvious way: its own __init__, a
    bare super().__init__(), its own optimiser and training step."""

    def __init__(self, model, suite, lr=0.05, **hyperparameters):
        super().__init__()
        self.model, self.kind = model, suite.kind
        self.sgd = torch.optim.SGD(self.model.parameters(), lr=lr)

    def meta_train_step(self, batch):
        loss = torch.stack([(self.model(qx) - qy).pow(2).mean()
                            for qx, qy in zip(batch.query_x, batch.query_y)]).mean()
        self.sgd.zero_grad()
        loss.backward()
        self.sgd.step()
        return {"loss": loss.item()}

    def predict(self, batch):
        with torch.no_grad():
            return torch.stack([self.model(qx) for qx in batch.query_x])


@metazoo.hookimpl
def _register_finetune(registry):
    registry.add("finetune", FineTune, family="model-algorithm")


def test_a_direct_subclass_calling_bare_super_init_is_listed_and_benchmarked(tmp_path):
    from metazoo.bench import plan, run_bench
    from metazoo.benchmark import Benchmark, Training
    from metazoo.executors import InProcess, WorkerContext

    plugin = types.SimpleNamespace(zoo_register_algorithms=_register_finetune)
    pm = get_plugin_manager(autoload=False)
    pm.register(plugin, name="finetune")
    zoo = Zoo(pm)
    assert "finetune" in zoo.algorithms.names()
    runs = plan(zoo, [Benchmark(name="ft", suite="sinusoid", training=Training(steps=3))], ["finetune"], [0])
    (record,) = run_bench(runs, InProcess(zoo, WorkerContext.of(zoo, "cpu")), tmp_path, torch.device("cpu"),
                          log=lambda message: None)
    assert record["status"] == "ok", record.get("error")
    assert record["train"]["steps"] == 3 and record["test"]["n"] == 600


def test_plugins_ship_benchmarks_and_leaderboard_formats(zoo, tmp_path, monkeypatch):
    spec = tmp_path / "tiny-lines.toml"
    spec.write_text('suite = "sinusoid"\n[evaluation]\ntest_tasks = 10\nval_tasks = 5\n[training]\nsteps = 2\n')

    @metazoo.hookimpl
    def zoo_register_benchmarks(registry):  # takes the spec's only argument, by name
        registry.add("tiny-lines", spec)

    @metazoo.hookimpl
    def zoo_register_formats():  # takes none of the spec's arguments: still called
        calls.append("formats")

    @metazoo.hookimpl(specname="zoo_register_formats")
    def add_json(registry):
        registry.add("json", lambda summary: summary[["label", "mean"]].to_json(orient="records"))

    calls: list[str] = []
    pm = get_plugin_manager(autoload=False)
    pm.register(types.SimpleNamespace(zoo_register_benchmarks=zoo_register_benchmarks,
                                      zoo_register_formats=zoo_register_formats), name="shipper")
    pm.register(types.SimpleNamespace(add_json=add_json), name="jsonfmt")
    monkeypatch.setattr("metazoo.cli.get_plugin_manager", lambda blocked=(): pm)
    code, stdout, _ = zoo("list")
    assert code == 0 and "Benchmarks from plugins: tiny-lines (plugin shipper" in stdout
    code, _, stderr = zoo("bench", "--benchmark", "tiny-lines", "--algos", "fomaml", "--out", str(tmp_path / "out"), "-q")
    assert code == 0, stderr
    code, stdout, stderr = zoo("leaderboard", str(tmp_path / "out"), "--format", "json")
    assert code == 0 and stdout.startswith('[{"label":"fomaml","mean":'), stderr
    assert calls == ["formats"]
    code, _, stderr = zoo("leaderboard", str(tmp_path / "out"), "--format", "yaml")
    assert code == 2 and "unknown format 'yaml'; available: md, csv, latex, html, json" in stderr


@pytest.mark.parametrize("kind", ["algorithm", "suite"])
def test_new_plugin_writes_a_package_that_installs_tests_lists_and_benches(zoo, zoo_process, tmp_path, kind):
    import subprocess
    import sys

    code, stdout, stderr = zoo("new-plugin", "wobble", f"--{kind}", "--dir", str(tmp_path))
    assert code == 0, stderr
    package = tmp_path / "metazoo-wobble"
    assert sorted(p.name for p in package.iterdir()) == ["README.md", "metazoo_wobble.py", "pyproject.toml",
                                                          "test_metazoo_wobble.py"]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True, capture_output=True)
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert tested.returncode == 0, tested.stdout + tested.stderr
    listed = zoo_process("list", "wobble", sites=(site,))
    assert "wobble" in listed.stdout and "metazoo-wobble 0.1.0" in listed.stdout, listed.stderr
    bench = (["--algos", "wobble,maml", "--suite", "sinusoid"] if kind == "algorithm"
             else ["--suite", "wobble", "--algos", "maml"])
    ran = zoo_process("bench", *bench, "--steps", "5", "--out", str(tmp_path / "out"), "-q", sites=(site,))
    assert ran.returncode == 0 and "wobble" in ran.stdout + str(list((tmp_path / "out").iterdir())), ran.stderr
    assert zoo("new-plugin", "wobble", "--dir", str(tmp_path))[0] == 2  # the folder exists: refused


def test_what_the_built_in_plugins_import_is_public():
    import ast
    from pathlib import Path

    private = {"metazoo.data"}  # the Omniglot loader, the suite's own helper
    import metazoo.plugins

    for path in sorted(Path(metazoo.plugins.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            # A plugin may build on another built-in plugin (Baseline++ on Baseline), as a third-party
            # plugin may on any installed one; from the core it takes only the public API.
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("metazoo.") \
                    and node.module not in private and not node.module.startswith("metazoo.plugins."):
                for alias in node.names:
                    assert alias.name in metazoo.__all__, f"{path.name} imports {node.module}.{alias.name}"


def test_a_registered_backbone_is_chosen_per_spec_per_algorithm_or_on_the_command_line(zoo, tmp_path, host):
    from metazoo.benchmark import load_benchmark
    from metazoo.run import Run, make_learner

    spec = tmp_path / "bb.toml"
    spec.write_text('suite = "hyperplanes"\n[evaluation]\ntest_tasks = 10\nval_tasks = 5\n[training]\nsteps = 2\n'
                    '[algorithms.maml]\nmeta_batch = 2\nbackbone = "mlp"\n[algorithms.protonet]\nmeta_batch = 2\n')
    bench = load_benchmark(spec)
    suite = host.suites.get("hyperplanes").factory()
    maml = make_learner(Run(bench, host.algorithms.get("maml"), 0), suite, host.backbones)
    protonet = make_learner(Run(bench, host.algorithms.get("protonet"), 0), suite, host.backbones)
    assert [m.out_features for m in maml.model if hasattr(m, "out_features")] == [40, 40, 2]  # the "mlp" backbone
    assert [m.out_features for m in protonet.model if hasattr(m, "out_features")] == [5, 2]  # the suite's own
    out = tmp_path / "out"
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--algos", "maml,protonet", "--out", str(out), "-q")
    assert code == 0, stderr
    records = {p.name.split("-")[0]: json.loads(p.read_text()) for p in (out / "bb" / "runs").glob("*.json")}
    assert records["maml"]["hyperparameters"]["backbone"] == "mlp" and "backbone" not in records["protonet"]["hyperparameters"]
    code, stdout, _ = zoo("bench", "--benchmark", str(spec), "--algos", "protonet", "--backbone", "mlp",
                          "--out", str(out), "--dry-run")
    assert code == 0 and stdout.splitlines()[-1] == "1 of 1 run(s) to run"  # another backbone: another run
    code, _, stderr = zoo("bench", "--benchmark", str(spec), "--backbone", "resnet99", "--out", str(out))
    assert code == 2 and "unknown backbone 'resnet99'; available: conv4, conv4-32, conv4-relation, conv4-running-bn, conv4-strided, mlp" in stderr
