"""The omniglot suite and its data loader: the real images, the split, every error path, the
cache, and the download against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest
import torch
from metazoo import data
from metazoo.data import (
    archive_layout,
    decode_image,
    download_omniglot,
    find_omniglot,
    load_omniglot,
)
from metazoo.errors import ZooError
from metazoo.plugins.omniglot import Omniglot, split_characters
from metazoo.tasks import draw_distinct
from PIL import Image

# The repository is cloned next to shared/ (locally /work/main beside /work/shared; in CI a
# fresh clone beside a copy of shared/).
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
HAVE_DATA = all((DATA / name).is_file() for name in data.OMNIGLOT_ARCHIVES)
real_data = pytest.mark.skipif(not HAVE_DATA, reason=f"the Omniglot zips are not in {DATA}")

# SHA-256 of the test split's character names joined by newlines: pins the split forever.
TEST_SPLIT_SHA256 = "334d50a68fadcd9c6a857aa8d43f5e4b83e3d90341f585982a381c2ee192dea9"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def omniglot_cache(tmp_path_factory) -> Path:
    """One cache directory for the whole session, so the real images are decoded once."""
    return tmp_path_factory.mktemp("metazoo-cache")


@pytest.fixture(scope="session")
def omniglot(omniglot_cache) -> data.OmniglotImages:
    if not HAVE_DATA:
        pytest.skip(f"the Omniglot zips are not in {DATA}")
    data._MEMO.clear()  # an earlier test's load in this process would skip writing this cache
    return load_omniglot(DATA, 28, omniglot_cache)


@pytest.fixture
def make_suite(omniglot, omniglot_cache, monkeypatch):
    """``make_suite(**protocol)``: an Omniglot suite on the shared data and session cache."""
    monkeypatch.setenv("METAZOO_CACHE", str(omniglot_cache))
    return partial(Omniglot, data_dir=str(DATA))


def png(size: int = 105) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (size, size), 1).save(buffer, "PNG")
    return buffer.getvalue()


def fake_zip(path: Path, top: str = "images_background", alphabets: int = 1, characters: int = 1):
    """A small zip in the Omniglot layout: ``alphabets × characters`` characters of 20 drawings."""
    image = png()
    with zipfile.ZipFile(path, "w") as archive:
        for a in range(alphabets):
            for c in range(1, characters + 1):
                for d in range(1, 21):
                    archive.writestr(f"{top}/Alphabet{a}/character{c:02d}/{a}{c}_{d:02d}.png", image)
    return path


def layout_names(top: str, alphabets: int, characters: int, drawings: int = 20) -> list[str]:
    """Entry names of ``characters`` characters spread over ``alphabets`` alphabets."""
    return [
        f"{top}/A{c % alphabets}/character{c:03d}/{c}_{d:02d}.png"
        for c in range(characters)
        for d in range(drawings)
    ]


# --------------------------------------------------------------------------- the real data


@real_data
def test_counts_and_pixels(omniglot):
    assert omniglot.images.shape == (1623, 20, 28, 28)
    assert omniglot.images.dtype == torch.uint8
    for top, (alphabets, characters) in [("images_background", (30, 964)), ("images_evaluation", (20, 659))]:
        names = [c for c in omniglot.characters if c.startswith(top + "/")]
        assert len(names) == characters
        assert len({c.split("/")[1] for c in names}) == alphabets
    assert list(omniglot.characters) == sorted(omniglot.characters)
    counts = torch.bincount(omniglot.images.flatten(), minlength=256)
    assert counts.nonzero().flatten().tolist() == [0, 255]  # binary, as in the reference
    assert 0.02 < counts[255] / counts.sum() < 0.3  # ink (255) is the minority: strokes on paper


@real_data
def test_split_sizes_disjoint_and_fixed(omniglot):
    splits = split_characters(omniglot.characters)
    assert {s: len(i) for s, i in splits.items()} == {"train": 1100, "val": 100, "test": 423}
    named = {s: {omniglot.characters[i] for i in idx.tolist()} for s, idx in splits.items()}
    assert not named["train"] & named["val"] and not named["train"] & named["test"]
    assert not named["val"] & named["test"]
    assert set.union(*named.values()) == set(omniglot.characters)
    # The split depends on the characters' names only, not on their order.
    shuffled = split_characters(omniglot.characters[::-1])
    for split, idx in shuffled.items():
        assert {omniglot.characters[::-1][i] for i in idx.tolist()} == named[split]
    test_names = "\n".join(omniglot.characters[i] for i in splits["test"].tolist())
    assert hashlib.sha256(test_names.encode()).hexdigest() == TEST_SPLIT_SHA256


@real_data
def test_every_character_gives_four_rotated_classes_in_its_split(make_suite):
    suite = make_suite()
    for split in ("train", "val", "test"):
        table = suite.classes(split)
        characters = suite.data[1][split]
        assert len(table) == 4 * len(characters)
        assert set(table[:, 0].tolist()) == set(characters.tolist())
        for turns in range(4):
            assert sorted(table[table[:, 1] == turns, 0].tolist()) == sorted(characters.tolist())


@real_data
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_tasks_show_their_splits_characters_rotated(make_suite, split):
    """Every sampled image is a drawing of one of the split's characters, turned by its class's
    rotation; the images of one label come from one class, different labels from different ones."""
    suite = make_suite(ways=5, shots=5, queries=15)
    images, splits = suite.data
    owners: dict[bytes, set[tuple[int, int]]] = {}  # image bytes -> {(character, turns)}
    for character in splits[split].tolist():
        for turns in range(4):
            for drawing in torch.rot90(images[character], turns, dims=(-2, -1)):
                owners.setdefault(drawing.numpy().tobytes(), set()).add((character, turns))
    batch = suite.sample(split, 4, torch.Generator().manual_seed(3))
    x = torch.cat([batch.support_x, batch.query_x], dim=1).mul(255).round().to(torch.uint8)
    y = torch.cat([batch.support_y, batch.query_y], dim=1)
    for task_x, task_y in zip(x, y):
        classes = []
        for label in range(5):
            found = [owners.get(image[0].numpy().tobytes(), set()) for image in task_x[task_y == label]]
            assert all(found), "an image that is no rotated drawing of this split's characters"
            classes.append(set.intersection(*found))
            assert classes[-1], f"label {label} mixes classes"
        assert all(not a & b for i, a in enumerate(classes) for b in classes[i + 1 :])


@real_data
def test_same_seed_same_tasks_other_seed_other_tasks(make_suite):
    suite = make_suite()
    first = suite.sample("train", 8, torch.Generator().manual_seed(0))
    again = make_suite().sample("train", 8, torch.Generator().manual_seed(0))
    other = suite.sample("train", 8, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first.tensors(), again.tensors()))
    assert not torch.equal(first.support_x, other.support_x)


@real_data
@pytest.mark.parametrize("ways,shots", [(5, 1), (5, 5), (20, 1), (20, 5)])
def test_shapes_and_labels(make_suite, ways, shots):
    suite = make_suite(ways=ways, shots=shots, queries=15)
    batch = suite.sample("test", 3, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (3, ways * shots, 1, 28, 28)
    assert batch.query_x.shape == (3, ways * 15, 1, 28, 28)
    assert batch.support_x.dtype == batch.query_x.dtype == torch.float32
    assert batch.support_y.dtype == batch.query_y.dtype == torch.int64
    assert 0 <= batch.query_x.min() and batch.query_x.max() <= 1
    for y, per_class in [(batch.support_y, shots), (batch.query_y, 15)]:
        assert (torch.bincount(y.flatten(), minlength=ways) == 3 * per_class).all()
        for row in y:
            assert (torch.bincount(row, minlength=ways) == per_class).all()


def test_draw_gives_distinct_indices():
    rows = draw_distinct(torch.Generator().manual_seed(0), 50, 20, 20)
    assert (rows.sort(dim=1).values == torch.arange(20)).all()


@real_data
def test_model_protocol_and_registration(make_suite):
    from metazoo import Zoo

    suite = make_suite()
    assert suite.protocol() == {"ways": 5, "shots": 1, "queries": 15, "image_size": 28, "classes": "rotations"}
    assert Zoo().suites.get("omniglot").factory is Omniglot
    batch = suite.sample("train", 1, torch.Generator().manual_seed(0))
    assert suite.make_model()(batch.query_x[0]).shape == (75, 5)


# --------------------------------------------------------------------------- the cache


@real_data
def test_reload_comes_from_the_cache_file(omniglot, omniglot_cache, monkeypatch):
    assert len(list(omniglot_cache.glob("omniglot-v1-*-28px.pt"))) == 1
    monkeypatch.setattr(data, "_MEMO", {})

    def no_decoding(*args):
        raise AssertionError("decoded although the cache file is there")

    monkeypatch.setattr(data, "decode_image", no_decoding)
    reloaded = load_omniglot(DATA, 28, omniglot_cache)
    assert torch.equal(reloaded.images, omniglot.images)
    assert reloaded.characters == omniglot.characters


@real_data
def test_suites_share_the_loaded_images(make_suite, monkeypatch):
    monkeypatch.setattr(data, "_read_cache", None)  # neither the cache file nor the zips
    monkeypatch.setattr(data, "decode_image", None)
    assert make_suite().data[0] is make_suite(ways=20).data[0]


def test_damaged_cache_file_is_ignored(tmp_path):
    damaged = tmp_path / "omniglot-v1-0-28px.pt"
    damaged.write_bytes(b"not a torch file")
    assert data._read_cache(damaged, 28) is None


# --------------------------------------------------------------------------- error paths


def test_missing_archive_is_named(tmp_path):
    fake_zip(tmp_path / "images_background.zip")
    with pytest.raises(ZooError, match=r"images_evaluation\.zip not found.*zoo data omniglot"):
        find_omniglot(tmp_path)


def test_empty_directory_says_how_to_get_the_data(tmp_path):
    with pytest.raises(ZooError, match=r"images_background\.zip not found.*copy images_back"):
        Omniglot(data_dir=str(tmp_path)).sample("train", 1, torch.Generator())


def test_data_directory_rules(tmp_path, monkeypatch):
    for folder in (tmp_path / "direct", tmp_path / "root" / "omniglot"):
        folder.mkdir(parents=True)
        for name in data.OMNIGLOT_ARCHIVES:
            (folder / name).touch()
    assert find_omniglot(tmp_path / "direct") == tmp_path / "direct"
    assert find_omniglot(tmp_path / "root") == tmp_path / "root" / "omniglot"
    monkeypatch.setenv("METAZOO_DATA", str(tmp_path / "root"))
    assert find_omniglot() == tmp_path / "root" / "omniglot"
    monkeypatch.delenv("METAZOO_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(ZooError, match=str(tmp_path / "xdg" / "metazoo" / "omniglot")):
        find_omniglot()


@real_data
def test_truncated_zip(tmp_path):
    (tmp_path / "images_background.zip").write_bytes((DATA / "images_background.zip").read_bytes()[:100_000])
    fake_zip(tmp_path / "images_evaluation.zip", top="images_evaluation")
    with pytest.raises(ZooError, match=r"images_background\.zip is not a readable zip archive \(truncated"):
        load_omniglot(tmp_path, 28, tmp_path / "cache")


def test_wrong_top_level_folder(tmp_path):
    fake_zip(tmp_path / "images_background.zip", top="omniglot")
    fake_zip(tmp_path / "images_evaluation.zip", top="images_evaluation")
    with pytest.raises(ZooError, match=r"images_background\.zip has the entry 'omniglot/.*canonical layout"):
        load_omniglot(tmp_path, 28, tmp_path / "cache")


def test_archives_swapped():
    names = layout_names("images_evaluation", 20, 659)
    with pytest.raises(ZooError, match="images_background/<Alphabet>"):
        archive_layout(Path("images_background.zip"), names)


def test_too_few_characters(tmp_path):
    fake_zip(tmp_path / "images_background.zip", alphabets=2, characters=3)
    fake_zip(tmp_path / "images_evaluation.zip", top="images_evaluation")
    with pytest.raises(ZooError, match="holds 2 alphabets and 6 characters; the canonical images_background.zip has 30 and 964"):
        load_omniglot(tmp_path, 28, tmp_path / "cache")


def test_too_few_drawings():
    names = layout_names("images_evaluation", 20, 659)
    names.remove("images_evaluation/A7/character007/7_05.png")
    with pytest.raises(ZooError, match="character007 has 19 drawings; every Omniglot character has 20"):
        archive_layout(Path("images_evaluation.zip"), names)
    assert len(archive_layout(Path("images_evaluation.zip"), layout_names("images_evaluation", 20, 659))) == 659


def test_bad_images():
    with pytest.raises(ZooError, match=r"x\.png is 50×50 pixels; Omniglot images are 105×105"):
        decode_image(png(50), 28, "x.png")
    with pytest.raises(ZooError, match=r"y\.png is not a readable PNG"):
        decode_image(b"junk", 28, "y.png")
    assert decode_image(png(), 28, "z.png").shape == (28, 28)


@pytest.mark.parametrize(
    "protocol,message",
    [
        ({"ways": 401}, "ways must be between 2 and 400 \\(the val split has 400 classes\\), got 401"),
        ({"ways": 1}, "ways must be between 2"),
        ({"shots": 5, "queries": 16}, "shots \\+ queries = 21 .* only 20"),
        ({"way": 5}, "'way'.*accepted: classes, image_size, queries, shots, ways"),
        ({"shots": 0}, "shots must be > 0"),
    ],
)
def test_bad_protocol(protocol, message):
    with pytest.raises(ZooError, match=message):
        Omniglot(**protocol)


# --------------------------------------------------------------------------- download


@pytest.fixture
def server(tmp_path):
    """A local HTTP server of two small fake zips: (base URL, their md5s, requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    fake_zip(served / "images_background.zip")
    fake_zip(served / "images_evaluation.zip", top="images_evaluation")
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", sums, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download_checks_md5_and_skips_valid_files(server, tmp_path):
    url, sums, requests = server
    target = tmp_path / "data"
    paths = download_omniglot(target, url, md5=sums)
    assert paths == [target / "images_background.zip", target / "images_evaluation.zip"]
    assert all(hashlib.md5(p.read_bytes()).hexdigest() == sums[p.name] for p in paths)
    assert sorted(p.name for p in target.iterdir()) == sorted(sums)  # no temporary files left
    assert len(requests) == 2
    download_omniglot(target, url, md5=sums)
    assert len(requests) == 2  # present and valid: not fetched again
    (target / "images_evaluation.zip").write_bytes(b"truncated")
    download_omniglot(target, url, md5=sums)
    assert requests[2:] == ["/images_evaluation.zip"]
    assert find_omniglot(target) == target


def test_download_with_wrong_md5_leaves_no_file(server, tmp_path):
    url, sums, _ = server
    wrong = {**sums, "images_background.zip": "0" * 32}
    with pytest.raises(ZooError, match=r"failed its md5 check: got [0-9a-f]{32}, expected 0{32}"):
        download_omniglot(tmp_path / "data", url, md5=wrong)
    assert list((tmp_path / "data").iterdir()) == []


def test_download_error_is_clear(server, tmp_path):
    url, sums, _ = server
    with pytest.raises(ZooError, match=r"could not download .*nowhere/images_background\.zip.*HTTP Error 404"):
        download_omniglot(tmp_path / "data", url + "nowhere/", md5=sums)
    assert list((tmp_path / "data").iterdir()) == []


def test_zoo_data_command_fetches_from_the_given_url_and_checks_md5(server, zoo, tmp_path):
    url, _, requests = server
    code, _, stderr = zoo("data", "omniglot", "--data-dir", str(tmp_path / "d"), "--url", url)
    assert requests == ["/images_background.zip"]  # fetched from --url, then refused
    assert code == 1 and "failed its md5 check" in stderr and "68d2efa1b9178cc56df9314c21c6e718" in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not any((tmp_path / "d").iterdir())


def test_tasks_of_distinct_characters_each_turned_as_the_maml_code_draws_them(make_suite):
    suite = make_suite(ways=20, shots=1, queries=1, classes="characters")
    default = make_suite(ways=20, shots=1, queries=1)
    batch = suite.sample("test", 30, torch.Generator().manual_seed(3))
    assert batch.support_x.shape == (30, 20, 1, 28, 28)
    # every label of a task is another character: no two support images are rotations of each other
    for task in batch.support_x:
        images = task[:, 0]
        turned = {k: torch.rot90(images, k, dims=(-2, -1)) for k in range(4)}
        for i in range(20):
            for j in range(i + 1, 20):
                assert not any(torch.equal(turned[k][i], images[j]) for k in range(4))
    again = default.sample("test", 30, torch.Generator().manual_seed(3))
    assert not torch.equal(again.support_x, batch.support_x)
    with pytest.raises(ZooError, match="ways must be between 2 and 100"):
        make_suite(ways=101, classes="characters")
