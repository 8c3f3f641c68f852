"""Few-shot classification on any folder of images (``--data-dir DIR``): a folder per class in
each split, or mini-ImageNet's ``images/`` and CSV files (see :mod:`metazoo.image_folder`).

A task draws ``ways`` distinct classes of the split, then ``shots`` support and ``queries`` query
images of each (distinct images of the class); labels 0..ways-1 follow the order the classes
were drawn, and the support and query sets are each shuffled, as in the Omniglot suite. Images
are float32 in [0, 1], ``[C, S, S]``. Every class of a split must hold at least
``shots + queries`` images. The default backbone is conv4 (max-pooling) for the images' size;
mini-ImageNet's papers use 84×84 RGB (``image_size = 84``, ``channels = 3``, the defaults).

Labelled batches: images of a split drawn uniformly with replacement (so classes in proportion
to their images, as an epoch over the folder would), each labelled by its class's index among
the split's classes (sorted by name); ``num_classes(split)`` is the number of class folders (or
CSV labels) of the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import metazoo
import torch
from metazoo import ImageSplit, load_image_folder
from metazoo.config import build_config, positive
from metazoo.errors import ZooError
from metazoo.tasks import (
    LabelledBatch,
    TaskBatch,
    TaskSuite,
    check_split,
    draw_distinct,
    split_stream,
)


@dataclass(frozen=True)
class ImagesConfig:
    """The suite's protocol."""

    ways: int = 5
    shots: int = 1
    queries: int = 15
    image_size: int = 84  # side of the square images after resizing, in pixels
    channels: int = 3  # 3: RGB, 1: grayscale

    def __post_init__(self) -> None:
        positive(self, "ways", "shots", "queries", "image_size")
        if self.channels not in (1, 3):
            raise ZooError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.ways < 2:
            raise ZooError(f"ways must be at least 2, got {self.ways}")


class Images(TaskSuite):
    """N-way K-shot tasks from an image folder; the images load on first use."""

    name = "images"
    kind = "classification"

    def __init__(self, data_dir: str | None = None, **protocol):
        self.config = build_config(ImagesConfig, protocol, "suite images")
        if data_dir is None:
            raise ZooError("suite images reads a folder of images: give it with --data-dir DIR")
        self.data_dir = data_dir

    @property
    def ways(self) -> int:
        return self.config.ways

    def prepare(self) -> None:
        """Decode the folder (or read its cache), so that a missing or mislaid folder stops a
        bench early; whether a split can make this protocol's tasks is checked when it is
        sampled (the harness samples every split it will use before any run starts)."""
        self.splits  # noqa: B018

    def _check_fits(self, split: str) -> None:
        """A clear error if ``split`` has too few classes, or classes with too few images, for
        this protocol's tasks (checked once per split)."""
        checked = self.__dict__.setdefault("_fitting_splits", set())
        if split in checked:
            return
        c, data = self.config, self.splits[split]
        if len(data.classes) < c.ways:
            raise ZooError(f"{self.data_dir}: split {split!r} has {len(data.classes)} classes, "
                           f"fewer than ways = {c.ways}")
        small = [name for name, n in zip(data.classes, data.counts.tolist()) if n < c.shots + c.queries]
        if small:
            raise ZooError(f"{self.data_dir}: split {split!r} has classes with fewer than shots + queries = "
                           f"{c.shots + c.queries} images: {', '.join(small[:5])}"
                           + (f" and {len(small) - 5} more" if len(small) > 5 else ""))
        checked.add(split)

    @cached_property
    def splits(self) -> dict[str, ImageSplit]:
        return load_image_folder(self.data_dir, self.config.image_size, self.config.channels)

    def sample(self, split, num_tasks, generator):
        check_split(split)
        self._check_fits(split)
        data, c = self.splits[split], self.config
        classes = draw_distinct(generator, num_tasks, len(data.classes), c.ways)  # [T, N]
        per_class = c.shots + c.queries
        counts = data.counts[classes]  # [T, N]
        # distinct images of each drawn class: random keys, those past the class's count last
        keys = torch.rand(num_tasks, c.ways, int(data.counts.max()), generator=generator, dtype=torch.float64)
        keys = keys.masked_fill(torch.arange(keys.shape[-1]) >= counts.unsqueeze(-1), 2.0)
        picks = keys.argsort(dim=-1, stable=True)[..., :per_class] + data.offsets[classes].unsqueeze(-1)
        support = _take(data, picks[..., : c.shots], generator)
        query = _take(data, picks[..., c.shots :], generator)
        return TaskBatch(*support, *query)

    def num_classes(self, split):
        """Classes of ``split``: its class folders (or CSV labels)."""
        check_split(split)
        return len(self.splits[split].classes)

    def sample_labelled(self, split, batch_size, generator):
        """``batch_size`` images of ``split``, uniformly drawn, labelled by their class's index."""
        own = split_stream(generator, split)  # the split's own stream; refuses an unknown split
        data = self.splits[split]
        index = torch.randint(len(data.images), (batch_size,), generator=own)  # [B] rows of images
        labels = torch.searchsorted(data.offsets, index, right=True) - 1  # the class holding each row
        return LabelledBatch(data.images[index].float().div_(255), labels)

    def make_model(self):
        from metazoo.models import Conv4

        c = self.config
        return Conv4(in_channels=c.channels, out_features=c.ways, image_size=c.image_size)


def _take(data: ImageSplit, picks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[T, M, C, S, S]`` and labels ``[T, M]`` of ``picks [T, N, per class]`` (rows of
    ``data.images``; label = position in N), shuffled."""
    num_tasks, ways, per_class = picks.shape
    labels = torch.arange(ways).repeat_interleave(per_class).expand(num_tasks, -1)
    order = draw_distinct(generator, num_tasks, ways * per_class, ways * per_class)
    index = picks.flatten(1).gather(1, order)  # [T, M]
    return data.images[index].float().div_(255), labels.gather(1, order)


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("images", Images, uses_data=True,
                 paper="any image folder; mini-ImageNet's layout as Ravi & Larochelle, ICLR 2017",
                 summary="few-shot classification on a folder of images (a folder per class, or mini-ImageNet's CSVs)")
