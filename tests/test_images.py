"""The `images` suite: a folder of images in either layout, decoded and cached, tasks drawn by
the kit's contract, and clear errors for folders it cannot use."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from metazoo.errors import ZooError
from metazoo.plugins.images import Images
from metazoo.testing import assert_suite_conforms
from PIL import Image

SPLIT_CLASSES = {"train": 6, "val": 3, "test": 4}


def colour(split: str, k: int) -> int:
    """Each class's images are one grey level of their own (so a task's labels can be checked)."""
    return 10 * (list(SPLIT_CLASSES).index(split) * 8 + k) + 5


def class_folders(root, per_class=4, size=12):
    for split, classes in SPLIT_CLASSES.items():
        for k in range(classes):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((size, size, 3), colour(split, k), np.uint8)).save(folder / f"{i}.png")
    return root


def csv_layout(root, per_class=4, size=12):
    (root / "images").mkdir(parents=True)
    for split, classes in SPLIT_CLASSES.items():
        rows = ["filename,label"]
        for k in range(classes):
            for i in range(per_class):
                name = f"{split}{k:02d}{i:02d}.jpg"
                Image.fromarray(np.full((size, size, 3), colour(split, k), np.uint8)).save(root / "images" / name)
                rows.append(f"{name},n{split}{k}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAZOO_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("layout", [class_folders, csv_layout])
def test_either_layout_makes_tasks_that_follow_the_contract(tmp_path, layout):
    root = layout(tmp_path / "data")
    suite = Images(data_dir=str(root), ways=3, shots=1, queries=2, image_size=16)
    suite.prepare()
    assert_suite_conforms(suite)
    batch = suite.sample("test", 5, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (5, 3, 3, 16, 16) and batch.query_x.shape == (5, 6, 3, 16, 16)
    for t in range(5):  # one grey level per label, the same in support and query, distinct per task
        grey = {}
        for x, y in [(batch.support_x[t], batch.support_y[t]), (batch.query_x[t], batch.query_y[t])]:
            for image, label in zip(x, y):
                grey.setdefault(int(label), set()).add(round(float(image.mean()) * 255))
        assert all(len(v) == 1 for v in grey.values()) and len({min(v) for v in grey.values()}) == 3
        test_greys = {colour("test", k) for k in range(SPLIT_CLASSES["test"])}
        assert {min(v) for v in grey.values()} <= test_greys


def test_the_decoded_images_are_cached_and_a_changed_folder_decoded_again(tmp_path, monkeypatch):
    root = class_folders(tmp_path / "data")
    Images(data_dir=str(root), ways=2, queries=2).prepare()
    import metazoo.image_folder as image_folder

    monkeypatch.setattr(image_folder, "decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    Images(data_dir=str(root), ways=2, queries=2).prepare()  # from the cache
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "train" / "class0" / "new.png")
    with pytest.raises(AssertionError, match="decoded"):
        Images(data_dir=str(root), ways=2, queries=2).prepare()


@pytest.mark.parametrize(("make", "protocol", "message"), [
    (lambda root: root.mkdir(), {}, "has neither image-folder layout; expected DIR/{train,val,test}/CLASS"),
    (lambda root: class_folders(root), {"ways": 5, "queries": 2}, "split 'val' has 3 classes, fewer than ways = 5"),
    (lambda root: class_folders(root), {"ways": 2, "shots": 2, "queries": 3},
     "classes with fewer than shots + queries = 5 images: class0"),
    (lambda root: None, {}, "does not exist"),
])
def test_a_folder_it_cannot_use_is_a_clear_error(tmp_path, make, protocol, message):
    root = tmp_path / "data"
    make(root)
    suite = Images(data_dir=str(root), **protocol)
    with pytest.raises(ZooError, match=re.escape(message)):
        suite.prepare()  # a missing or mislaid folder
        for split in ("train", "val", "test"):  # a split that cannot make the protocol's tasks
            suite.sample(split, 1, torch.Generator().manual_seed(0))


def test_a_training_way_needs_only_the_train_split_and_a_test_way_every_split(zoo, tmp_path):
    root = class_folders(tmp_path / "data", size=16, per_class=6)  # train 6 classes, val and test 3
    spec = tmp_path / "ways.toml"
    body = ('suite = "images"\n[protocol]\nways = {ways}\nqueries = 2\nimage_size = 16\n'
            "[evaluation]\ntest_tasks = 4\nval_tasks = 2\n[training]\nsteps = 1\n"
            "[training_protocol.protonet]\nways = 5\n")
    spec.write_text(body.format(ways=2))  # ProtoNet trains 5-way: more than val's 3 classes
    code, stdout, stderr = zoo("bench", "--benchmark", str(spec), "--data-dir", str(root), "--algos", "protonet",
                               "--out", str(tmp_path / "out"), "--dry-run")
    assert code == 0, stderr
    spec.write_text(body.format(ways=4))  # tested 4-way: val has 3 classes, so no run starts
    code, stdout, stderr = zoo("bench", "--benchmark", str(spec), "--data-dir", str(root), "--algos", "protonet",
                               "--out", str(tmp_path / "refused"))
    assert code == 2 and "split 'val' has 3 classes, fewer than ways = 4" in stderr
    assert not any((tmp_path / "refused").rglob("*"))  # no run started


def test_zoo_bench_runs_an_image_folder(zoo, tmp_path):
    root = class_folders(tmp_path / "data", size=16)
    spec = tmp_path / "folder.toml"
    spec.write_text('suite = "images"\n[protocol]\nways = 2\nqueries = 2\nimage_size = 16\n'
                    "[evaluation]\ntest_tasks = 10\nval_tasks = 4\n[training]\nsteps = 2\n"
                    "[algorithms.maml]\nmeta_batch = 2\n[algorithms.protonet]\nmeta_batch = 2\n")
    code, stdout, stderr = zoo("bench", "--benchmark", str(spec), "--data-dir", str(root), "--algos", "protonet,maml",
                               "--out", str(tmp_path / "out"), "-q")
    assert code == 0, stderr
    assert "protonet" in stdout and "maml" in stdout


@pytest.mark.parametrize(("make", "layout"), [(class_folders, "a folder per class in train/, val/, test/"),
                                              (csv_layout, "mini-ImageNet's images/ with train.csv")])
def test_zoo_data_check_reports_the_layout_and_the_classes_and_images_per_split(zoo, tmp_path, make, layout):
    root = make(tmp_path / "data", per_class=3)
    code, stdout, stderr = zoo("data", "check", str(root))
    assert code == 0, stderr
    assert layout in stdout
    for split, classes in SPLIT_CLASSES.items():
        assert f"{split}: {classes} classes, {3 * classes} images (3–3 per class)" in stdout
    code, stdout, stderr = zoo("data", "check", str(tmp_path))  # the folder above the dataset
    assert code == 1 and "has neither image-folder layout" in stderr
