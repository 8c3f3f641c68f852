"""The built-in benchmark specs on the `images` suite (mini-ImageNet, CUB, CIFAR-FS): each loads
and plans every algorithm on a generated folder of the size its protocols need, in either layout,
and a folder laid out wrongly stops `zoo bench` with the error that names the layouts.

The real datasets cannot be downloaded here; the folders are tiny images (the suite resizes every
image to the spec's size), so a dry run takes seconds.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from metazoo.benchmark import builtin_benchmarks, load_benchmark
from metazoo.tasks import SPLITS
from PIL import Image

IMAGE_SPECS = sorted(name for name, path in builtin_benchmarks().items()
                     if load_benchmark(path).suite == "images")


# Digests of each image spec's protocol and evaluation settings (Benchmark.hash). The test-task
# lists themselves depend on the user's images, so tests/test_task_lists.py cannot pin them
# without the data; a deliberate change of these protocols updates the digests here.
PROTOCOL_HASHES = {
    "cifar-fs-5w1s": "a3fcc1677f1b",
    "cub-5w1s": "cf04d4f9299a",
    "mini-imagenet-5w1s": "cf04d4f9299a",
    "mini-imagenet-5w5s": "7efd7ec08346",
}


def needs(name: str) -> tuple[int, int]:
    """(classes per split, images per class) that the spec's test and training protocols need."""
    spec = load_benchmark(builtin_benchmarks()[name])
    protocols = [spec.protocol, *({**spec.protocol, **changes} for changes in spec.training_protocols.values())]
    return (max(p.get("ways", 5) for p in protocols),
            max(p.get("shots", 1) + p.get("queries", 15) for p in protocols))


CLASSES = max(needs(name)[0] for name in IMAGE_SPECS)
PER_CLASS = max(needs(name)[1] for name in IMAGE_SPECS)


def image(path, k: int) -> None:
    Image.fromarray(np.full((6, 6, 3), 7 * k % 256, np.uint8)).save(path)


def class_folders(root):
    for split in SPLITS:
        for k in range(CLASSES):
            folder = root / split / f"class{k:02d}"
            folder.mkdir(parents=True)
            for i in range(PER_CLASS):
                image(folder / f"{i}.png", k)
    return root


def csv_layout(root):
    (root / "images").mkdir(parents=True)
    for split in SPLITS:
        rows = ["filename,label"]
        for k in range(CLASSES):
            for i in range(PER_CLASS):
                name = f"{split}{k:02d}{i:02d}.jpg"
                image(root / "images" / name, k)
                rows.append(f"{name},n{split}{k:02d}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("image-benchmarks")
    return {"class folders": class_folders(base / "folders"), "csv": csv_layout(base / "csv")}


def test_the_image_benchmarks_are_built_in_and_their_protocols_pinned():
    assert sorted(PROTOCOL_HASHES) == IMAGE_SPECS
    for name, digest in PROTOCOL_HASHES.items():
        assert load_benchmark(builtin_benchmarks()[name]).hash() == digest, name


@pytest.mark.parametrize("layout", ["class folders", "csv"])
@pytest.mark.parametrize("name", IMAGE_SPECS)
def test_each_image_benchmark_plans_every_algorithm_on_a_generated_folder(zoo, folders, tmp_path, name, layout):
    code, stdout, stderr = zoo("bench", "--benchmark", name, "--data-dir", str(folders[layout]), "--dry-run",
                               "--algos", "*", "--out", str(tmp_path / "out"))
    assert code == 0, stderr
    planned = re.findall(rf"^{re.escape(name)}: (\S+) seed 0: to run", stdout, re.MULTILINE)
    assert f"{len(planned)} of {len(planned)} run(s) to run" in stdout
    spec = load_benchmark(builtin_benchmarks()[name])
    assert set(spec.algorithms) | set(spec.training_protocols) | set(spec.published) <= set(planned)
    # every table of the spec is for a registered algorithm (no warning about an unknown one)
    assert "is for no registered algorithm" not in stdout + stderr


@pytest.mark.parametrize("name", IMAGE_SPECS)
def test_each_image_benchmark_cites_its_published_numbers(name):
    spec = load_benchmark(builtin_benchmarks()[name])
    for algorithm, published in spec.published.items():
        assert 0 < published.value < 1 and published.ci is not None and published.ci < 0.05, algorithm
        assert re.search(r"Table \d", published.citation), (algorithm, published.citation)


def mislaid_one_level_up(root):
    """The dataset's folder inside the folder given (--data-dir points at its parent)."""
    class_folders(root / "mini-imagenet")


def mislaid_csvs_without_images(root):
    """mini-ImageNet's CSVs beside the images, without the images/ folder."""
    csv_layout(root)
    for path in (root / "images").iterdir():
        path.rename(root / path.name)
    (root / "images").rmdir()


@pytest.mark.parametrize("mislay", [mislaid_one_level_up, mislaid_csvs_without_images])
def test_a_mislaid_folder_stops_the_benchmark_with_the_expected_layouts(zoo, tmp_path, mislay):
    root = tmp_path / "data"
    mislay(root)
    code, stdout, stderr = zoo("bench", "--benchmark", "mini-imagenet-5w1s", "--data-dir", str(root), "--dry-run",
                               "--algos", "*", "--out", str(tmp_path / "out"))
    assert code != 0 and "to run" not in stdout
    assert f"{root} has neither image-folder layout; expected DIR/{{train,val,test}}/CLASS/*.png|jpg" in stderr
    assert "DIR/images/*.jpg with DIR/{train,val,test}.csv" in stderr
