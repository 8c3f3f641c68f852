"""Few-shot datasets held as folders of images: the two layouts in common use, decoding with
Pillow, and a cache of the decoded images.

Layouts (``root`` is the folder given by ``--data-dir``):

- ``root/{train,val,test}/CLASS/*.png|jpg|jpeg`` — a folder per class in each split (as
  learn2learn and LibFewShot ship their datasets);
- ``root/images/*.jpg`` with ``root/{train,val,test}.csv``, rows ``filename,label`` after a header
  — mini-ImageNet as Ravi & Larochelle (ICLR 2017) distribute it.

Every image is converted to RGB (``channels=3``) or grayscale (``channels=1``) and resized to
``image_size``² (bilinear), as uint8. The decoded splits are cached in
``<cache>/images-v1-<key>.pt`` (``<cache>`` as for Omniglot: ``$METAZOO_CACHE`` or the per-user
cache); ``<key>`` digests the folder's path, every image's path, size and modification time, the
size and the channels, so a changed folder is decoded again.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from metazoo.data import atomic_write, cache_dir
from metazoo.errors import ZooError
from metazoo.tasks import SPLITS
from PIL import Image, UnidentifiedImageError

CACHE_VERSION = 1
EXTENSIONS = (".png", ".jpg", ".jpeg")
LAYOUTS = ("DIR/{train,val,test}/CLASS/*.png|jpg (learn2learn, LibFewShot), or DIR/images/*.jpg with "
           "DIR/{train,val,test}.csv of filename,label rows (mini-ImageNet, Ravi & Larochelle 2017)")


@dataclass(frozen=True)
class ImageSplit:
    """One split's images ``[M, C, S, S]`` uint8, grouped by class: class ``c`` holds
    ``images[offsets[c] : offsets[c] + counts[c]]``."""

    images: torch.Tensor
    offsets: torch.Tensor  # [n_classes] int64
    counts: torch.Tensor  # [n_classes] int64
    classes: tuple[str, ...]


def find_layout(root: Path) -> str:
    """``"folders"`` (``DIR/{train,val,test}/CLASS/``) or ``"csv"`` (mini-ImageNet's
    ``DIR/images/`` with ``DIR/{train,val,test}.csv``); a clear error for anything else."""
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"image folder {root} does not exist; expected {LAYOUTS}")
    if all((root / split).is_dir() for split in SPLITS):
        return "folders"
    if (root / "images").is_dir() and all((root / f"{split}.csv").is_file() for split in SPLITS):
        return "csv"
    raise ZooError(f"{root} has neither image-folder layout; expected {LAYOUTS}")


def list_images(root: Path) -> dict[str, dict[str, list[Path]]]:
    """``split → class → image paths`` (sorted) in either layout; a clear error otherwise."""
    root = Path(root)
    if find_layout(root) == "folders":
        return {split: {folder.name: sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
                        for folder in sorted((root / split).iterdir()) if folder.is_dir()}
                for split in SPLITS}
    return {split: _read_csv(root, split) for split in SPLITS}


def describe_folder(root: str | Path) -> str:
    """What ``zoo data check`` prints: the layout found, then the classes and images of each
    split (fewest and most per class), without decoding any image."""
    root = Path(root)
    layout = find_layout(root)
    listing = list_images(root)
    lines = [f"{root}: " + ("a folder per class in train/, val/, test/" if layout == "folders"
                            else "mini-ImageNet's images/ with train.csv, val.csv, test.csv")]
    for split, classes in listing.items():
        counts = [len(paths) for paths in classes.values()]
        spread = f" ({min(counts)}–{max(counts)} per class)" if counts else ""
        lines.append(f"  {split}: {len(classes)} classes, {sum(counts)} images{spread}")
    return "\n".join(lines)


def _read_csv(root: Path, split: str) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    path = root / f"{split}.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    for line, row in enumerate(rows[1:], 2):  # after the header
        if len(row) != 2:
            raise ZooError(f"{path}, line {line}: expected 'filename,label', got {','.join(row)!r}")
        image = root / "images" / row[0]
        if not image.is_file():
            raise ZooError(f"{path}, line {line}: image {image} does not exist")
        classes.setdefault(row[1], []).append(image)
    return {label: sorted(paths) for label, paths in sorted(classes.items())}


def load_image_folder(root: str | Path, image_size: int, channels: int) -> dict[str, ImageSplit]:
    """Every split of the folder at ``root``, decoded (from the cache when it is current)."""
    listing = list_images(Path(root))
    for split, classes in listing.items():
        if not classes:
            raise ZooError(f"{root}: split {split!r} has no classes; expected {LAYOUTS}")
    key = _digest(Path(root), listing, image_size, channels)
    cache = cache_dir() / f"images-v{CACHE_VERSION}-{key}.pt"
    loaded = _read_cache(cache)
    if loaded is None:
        loaded = {split: _decode_split(classes, image_size, channels) for split, classes in listing.items()}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            payload = {s: {"images": v.images, "offsets": v.offsets, "counts": v.counts,
                           "classes": list(v.classes)} for s, v in loaded.items()}
            atomic_write(cache, lambda f: torch.save(payload, f))
        except OSError as exc:
            warnings.warn(f"could not write the image cache {cache}: {exc}", stacklevel=2)
    return loaded


def decode(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image file → ``[C, S, S]`` uint8."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
            image = image.resize((image_size, image_size), resample=Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ZooError(f"{path} is not a readable image ({exc})") from None
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _decode_split(classes: dict[str, list[Path]], image_size: int, channels: int) -> ImageSplit:
    names = tuple(classes)
    counts = torch.tensor([len(classes[name]) for name in names], dtype=torch.int64)
    offsets = torch.cumsum(counts, 0) - counts
    images = np.stack([decode(p, image_size, channels) for name in names for p in classes[name]])
    return ImageSplit(torch.from_numpy(images), offsets, counts, names)


def _digest(root: Path, listing, image_size: int, channels: int) -> str:
    h = hashlib.sha256(f"{root.resolve()}|{image_size}|{channels}".encode())
    for split, classes in listing.items():
        for name, paths in classes.items():
            for path in paths:
                stat = path.stat()
                h.update(f"{split}|{name}|{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, ImageSplit] | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        return {split: ImageSplit(saved[split]["images"], saved[split]["offsets"], saved[split]["counts"],
                             tuple(saved[split]["classes"])) for split in SPLITS}
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
