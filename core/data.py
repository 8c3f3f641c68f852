"""Dataset files on disk: where they live, checking them, decoding once, caching, downloading.

Omniglot (Lake, Salakhutdinov & Tenenbaum 2015) comes as the two zips of its canonical release,
``images_background.zip`` (30 alphabets, 964 characters) and ``images_evaluation.zip``
(20 alphabets, 659 characters), laid out as ``images_*/<Alphabet>/characterNN/*.png`` with 20
drawings of 105×105 1-bit pixels per character.

Where the zips are looked for (the first rule that applies):

1. an explicit ``data_dir`` (the suite option, ``--data-dir``): the zips directly in it, or in
   ``data_dir/omniglot/``;
2. the environment variable ``METAZOO_DATA``: ``$METAZOO_DATA/omniglot/``, or the zips directly
   in ``$METAZOO_DATA``;
3. the per-user directory ``$XDG_CACHE_HOME/metazoo/omniglot/`` (``~/.cache/metazoo/omniglot/``),
   which is also where ``zoo data omniglot`` downloads to by default (:func:`default_data_dir`).

The contents are verified, not the zips' checksums (repacked copies such as the project's shared
one have other checksums): alphabet and character counts, 20 drawings a character, 105×105
images. The decoded images are cached as a uint8 tensor in
``<cache>/omniglot-v1-<key>-<S>px.pt``, where ``<cache>`` is ``$METAZOO_CACHE``, else
``$XDG_CACHE_HOME/metazoo`` (``~/.cache/metazoo``), and ``<key>`` is a SHA-256 prefix over both
archives' SHA-256 sums: a changed archive or size never reuses a stale cache. Within a process
the loaded tensor is memoised, so several suites share one copy.

Decoding follows the MAML reference preprocessing (Finn et al. 2017): each PNG is opened as
stored (1-bit) and resized to S×S with ``Image.LANCZOS``; for 1-bit images Pillow resizes by
nearest neighbour, so the pixels stay binary exactly as in the reference's resized images.
Stored convention: ink = 255, background = 0 (the PNGs have black ink on white), so the float
images the suite hands out are ink 1.0 on background 0.0.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from metazoo.errors import ZooError
from PIL import Image, UnidentifiedImageError

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
#: Archive name → (alphabets, characters) of the canonical release.
OMNIGLOT_ARCHIVES: dict[str, tuple[int, int]] = {
    "images_background.zip": (30, 964),
    "images_evaluation.zip": (20, 659),
}
#: md5 sums published with the canonical release.
OMNIGLOT_MD5: dict[str, str] = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
DRAWINGS = 20  # drawings of every character
SOURCE_SIZE = 105  # side of every stored image, in pixels
CACHE_VERSION = 1  # bump when the decoded format or the preprocessing changes

_HOW_TO_GET = (
    "get the data with `zoo data omniglot --data-dir {dir}` (downloads the canonical release), "
    "or copy images_background.zip and images_evaluation.zip from "
    "https://github.com/brendenlake/omniglot (folder python/) into {dir}"
)


@dataclass(frozen=True)
class OmniglotImages:
    """All Omniglot drawings, decoded: characters in sorted order, background then evaluation."""

    images: torch.Tensor  # [1623, 20, S, S] uint8, ink 255, background 0
    characters: tuple[str, ...]  # "images_background/<Alphabet>/characterNN", one per row


_MEMO: dict[tuple, OmniglotImages] = {}


# --------------------------------------------------------------------------- locations


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/metazoo``, else ``~/.cache/metazoo``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "metazoo"


def cache_dir() -> Path:
    """Where decoded datasets are cached: ``$METAZOO_CACHE``, else :func:`user_cache_root`."""
    env = os.environ.get("METAZOO_CACHE")
    return Path(env).expanduser() if env else user_cache_root()


def default_data_dir() -> Path:
    """Where the Omniglot zips belong when no directory is given (and where to download them)."""
    env = os.environ.get("METAZOO_DATA")
    root = Path(env).expanduser() if env else user_cache_root()
    return root / "omniglot"


def find_omniglot(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding both Omniglot zips, by the rules of the module docstring.

    Raises a :class:`ZooError` naming the missing file and how to get the data.
    """
    if data_dir is not None:
        given = Path(data_dir).expanduser()
        candidates = [given, given / "omniglot"]
    elif os.environ.get("METAZOO_DATA"):
        root = Path(os.environ["METAZOO_DATA"]).expanduser()
        candidates = [root / "omniglot", root]
    else:
        candidates = [default_data_dir()]
    for folder in candidates:
        if all((folder / name).is_file() for name in OMNIGLOT_ARCHIVES):
            return folder
    # Name the folder that holds part of the data, if any, else the first one searched.
    folder = next(
        (f for f in candidates if any((f / n).is_file() for n in OMNIGLOT_ARCHIVES)), candidates[0]
    )
    missing = [name for name in OMNIGLOT_ARCHIVES if not (folder / name).is_file()]
    searched = " and ".join(str(f) for f in candidates)
    raise ZooError(
        f"Omniglot data missing: {folder / missing[0]} not found (searched {searched}); "
        + _HOW_TO_GET.format(dir=folder)
    )


# --------------------------------------------------------------------------- loading


def load_omniglot(
    data_dir: str | os.PathLike | None = None,
    image_size: int = 28,
    cache: str | os.PathLike | None = None,
) -> OmniglotImages:
    """All Omniglot drawings at ``image_size``², from memory, the cache file, or the zips.

    :param data_dir: where the zips are (see :func:`find_omniglot`).
    :param cache: the cache directory; default :func:`cache_dir`.
    """
    folder = find_omniglot(data_dir)
    archives = [folder / name for name in OMNIGLOT_ARCHIVES]
    stamp = (image_size, *(_file_stamp(path) for path in archives))
    if stamp in _MEMO:
        return _MEMO[stamp]
    cache_file = Path(cache).expanduser() if cache is not None else cache_dir()
    cache_file = cache_file / f"omniglot-v{CACHE_VERSION}-{_digest(archives)}-{image_size}px.pt"
    data = _read_cache(cache_file, image_size)
    if data is None:
        data = decode_omniglot(archives, image_size)
        _write_cache(cache_file, data)
    _MEMO[stamp] = data
    return data


def decode_omniglot(archives: Sequence[Path], image_size: int) -> OmniglotImages:
    """Verify and decode the given zips (in order) into one :class:`OmniglotImages`."""
    characters: list[str] = []
    blocks: list[torch.Tensor] = []
    for path in archives:
        names, images = _decode_archive(Path(path), image_size)
        characters += names
        blocks.append(images)
    return OmniglotImages(torch.cat(blocks), tuple(characters))


def decode_image(data: bytes, image_size: int, where: str) -> np.ndarray:
    """One PNG's bytes → ``[S, S]`` uint8, ink 255 (``where`` names it in errors)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ZooError(f"{where} is not a readable PNG image ({exc})") from None
    if image.size != (SOURCE_SIZE, SOURCE_SIZE):
        raise ZooError(
            f"{where} is {image.size[0]}×{image.size[1]} pixels; Omniglot images are "
            f"{SOURCE_SIZE}×{SOURCE_SIZE}"
        )
    resized = image.resize((image_size, image_size), resample=Image.Resampling.LANCZOS).convert("L")
    return 255 - np.asarray(resized, dtype=np.uint8)


def archive_layout(path: Path, names: Sequence[str]) -> dict[str, list[str]]:
    """Check the entry names of one Omniglot zip: character folder → its sorted PNG entries.

    Raises a :class:`ZooError` naming the archive and what is wrong with it.
    """
    top = path.stem  # images_background.zip holds images_background/...
    characters: dict[str, list[str]] = {}
    for name in names:
        if name.endswith("/") or not name.lower().endswith(".png"):
            continue
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != top:
            raise ZooError(
                f"{path} has the entry {name!r}; expected the canonical layout "
                f"{top}/<Alphabet>/<characterNN>/<drawing>.png (is this the right archive, "
                "or was it repacked with another top-level folder?)"
            )
        characters.setdefault("/".join(parts[:3]), []).append(name)
    want_alphabets, want_characters = OMNIGLOT_ARCHIVES[path.name]
    alphabets = {name.split("/")[1] for name in characters}
    if (len(alphabets), len(characters)) != (want_alphabets, want_characters):
        raise ZooError(
            f"{path} holds {len(alphabets)} alphabets and {len(characters)} characters; "
            f"the canonical {path.name} has {want_alphabets} and {want_characters} "
            "(incomplete or wrong archive)"
        )
    for character, drawings in characters.items():
        if len(drawings) != DRAWINGS:
            raise ZooError(
                f"{path}: {character} has {len(drawings)} drawings; every Omniglot character "
                f"has {DRAWINGS}"
            )
    return {character: sorted(characters[character]) for character in sorted(characters)}


def _decode_archive(path: Path, image_size: int) -> tuple[list[str], torch.Tensor]:
    """Verify one zip and decode it: (sorted character folders, uint8 ``[C, 20, S, S]``)."""
    with _open_zip(path) as archive:
        layout = archive_layout(path, archive.namelist())
        entries = [name for drawings in layout.values() for name in drawings]
        pixels = np.empty((len(entries), image_size, image_size), dtype=np.uint8)
        for i, name in enumerate(entries):
            pixels[i] = decode_image(_read_entry(archive, path, name), image_size, f"{path}:{name}")
    images = torch.from_numpy(pixels).view(len(layout), DRAWINGS, image_size, image_size)
    return list(layout), images


@contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ZooError(
            f"{path} is not a readable zip archive (truncated or corrupt: {exc}); "
            + _HOW_TO_GET.format(dir=path.parent)
        ) from None
    with archive:
        yield archive


def _read_entry(archive: zipfile.ZipFile, path: Path, name: str) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise ZooError(
            f"{path} is corrupt: cannot read {name} ({exc}); " + _HOW_TO_GET.format(dir=path.parent)
        ) from None


def _file_stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _file_hash(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(archives: Sequence[Path]) -> str:
    """16 hex digits identifying the archives' contents."""
    sums = "".join(_file_hash(path, "sha256") for path in archives)
    return hashlib.sha256(sums.encode()).hexdigest()[:16]


def _read_cache(path: Path, image_size: int) -> OmniglotImages | None:
    """The cached images, or ``None`` when the file is absent, unreadable or of another shape."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        images, characters = saved["images"], tuple(saved["characters"])
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    total = sum(count for _, count in OMNIGLOT_ARCHIVES.values())
    shape = (total, DRAWINGS, image_size, image_size)
    if images.dtype != torch.uint8 or tuple(images.shape) != shape or len(characters) != total:
        return None
    return OmniglotImages(images, characters)


def _write_cache(path: Path, data: OmniglotImages) -> None:
    """Save atomically (temporary file, then rename); a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"images": data.images, "characters": list(data.characters)}
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as exc:
        warnings.warn(f"could not write the Omniglot cache {path}: {exc}", stacklevel=3)


def atomic_write(path: Path, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, then move it into place."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it private
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- downloading


def download_omniglot(
    data_dir: Path,
    base_url: str = OMNIGLOT_URL,
    *,
    md5: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the two Omniglot zips into ``data_dir``; return their paths.

    A zip already there is kept when its md5 is the published one or its contents pass the
    layout check (a repacked copy). Each download is checked against its md5 (``md5`` overrides
    :data:`OMNIGLOT_MD5`, for tests) and written atomically: a failed one leaves no file.
    """
    sums = dict(OMNIGLOT_MD5 if md5 is None else md5)
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in OMNIGLOT_ARCHIVES:
        path = data_dir / name
        if not _usable_copy(path, sums[name]):
            _fetch(base_url.rstrip("/") + "/" + name, path, sums[name], timeout)
        paths.append(path)
    return paths


def _usable_copy(path: Path, md5: str) -> bool:
    if not path.is_file():
        return False
    if _file_hash(path, "md5") == md5:
        return True
    try:
        with _open_zip(path) as archive:
            archive_layout(path, archive.namelist())
    except ZooError:
        return False
    return True


def _fetch(url: str, path: Path, md5: str, timeout: float) -> None:
    """Stream ``url`` into ``path`` if its md5 is ``md5``; else raise and leave no file."""
    digest = hashlib.md5()

    def write(f) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
        if digest.hexdigest() != md5:
            raise ZooError(
                f"download of {url} failed its md5 check: got {digest.hexdigest()}, expected "
                f"{md5}; {path} was not written (retry, or copy the zip there by hand)"
            )

    try:
        atomic_write(path, write)
    except OSError as exc:  # urllib's URLError and HTTPError included
        raise ZooError(
            f"could not download {url} ({exc}); {path} was not written. Without internet, copy "
            f"images_background.zip and images_evaluation.zip into {path.parent}"
        ) from None
