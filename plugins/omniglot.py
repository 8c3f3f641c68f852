"""Omniglot few-shot image classification (Lake et al. 2015), set up as in MAML (Finn et al. 2017).

Data: the real images of the canonical release, found, verified, decoded and cached by
:mod:`metazoo.data` (argument ``data_dir``, given by ``--data-dir``, else ``$METAZOO_DATA``, else the per-user directory;
``zoo data omniglot`` downloads them). Images are 1×S×S float32, ink 1.0 on background 0.0,
resized from 105×105 as the MAML reference preprocessing does (S = ``image_size``, 28 default).

Split (as in the MAML reference code): all 1623 characters of both archives are shuffled with a
fixed seed into 1100 train, 100 val and 423 test characters. The shuffle is machine- and
version-independent: characters (named ``images_background/<Alphabet>/characterNN``) are ordered
by the SHA-256 of ``"{SPLIT_SEED}:{name}"``; the first 1100 are train, the next 100 val, the
rest test. A character belongs to exactly one split.

Rotations: every character of a split also appears rotated by 90, 180 and 270 degrees as a class
of its own in that same split, so the splits have 4400, 400 and 1692 classes. Class ``c`` of a
split is character ``split_characters[c // 4]`` turned ``c % 4`` quarter turns counter-clockwise
(``torch.rot90``); all its drawings are turned alike.

Tasks (``classes="rotations"``, the default): ``ways`` distinct classes of the split, each with
``shots`` support and ``queries`` query
drawings (distinct drawings of its 20); labels 0..ways-1 are assigned in the random order the
classes were drawn, and the support and query sets are each shuffled. Sampling is tensor indexing
on the cached images, vectorised over all tasks. With ``classes="characters"`` a task draws
``ways`` distinct characters and turns each (all its drawings alike) by a random number of quarter
turns, as the MAML reference code does; the rest is the same.

Labelled batches (for learners that pre-train a classifier on every training class): the
split's classes are its (character, quarter turns) pairs as above, ``4 × characters`` of them
(4400 in train) and numbered as in :meth:`Omniglot.classes`, in both ``classes`` modes: a task's
label always stands for one character under one rotation, whichever way the task was drawn
(the ``characters`` mode only keeps two turns of one character out of the same task). Chen et
al. (ICLR 2019) pre-train their Omniglot baselines on rotations as classes too. Each example is
drawn uniformly, with replacement, from the split's images of every class (20 drawings each).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import metazoo
import torch
from metazoo.config import build_config, positive
from metazoo.data import DRAWINGS, load_omniglot
from metazoo.errors import ZooError
from metazoo.tasks import (
    LabelledBatch,
    TaskBatch,
    TaskSuite,
    check_split,
    draw_distinct,
    split_stream,
)

PAPER = (
    "Lake, Salakhutdinov & Tenenbaum. Human-level concept learning through probabilistic program "
    "induction. Science 2015; split and rotations as in Finn, Abbeel & Levine, ICML 2017"
)
SPLIT_SEED = 1
SPLIT_SIZES: dict[str, int] = {"train": 1100, "val": 100, "test": 423}  # characters
ROTATIONS = 4  # 0, 90, 180, 270 degrees: classes per character


@dataclass(frozen=True)
class OmniglotConfig:
    """The suite's protocol: the settings that define its tasks."""

    ways: int = 5  # classes per task
    shots: int = 1  # support drawings per class
    queries: int = 15  # query drawings per class
    image_size: int = 28  # side of the square images, in pixels
    # "rotations": every (character, quarter turns) pair is a class of its own, and a task draws
    # `ways` distinct classes (so two classes of a task may be one character turned); "characters":
    # a task draws `ways` distinct characters and turns each by a random multiple of 90°, as the
    # MAML reference code samples Omniglot tasks.
    classes: Literal["rotations", "characters"] = "rotations"

    def __post_init__(self) -> None:
        positive(self, "ways", "shots", "queries", "image_size")
        if self.shots + self.queries > DRAWINGS:
            raise ZooError(
                f"shots + queries = {self.shots + self.queries} drawings per class, but every "
                f"Omniglot character has only {DRAWINGS}"
            )
        split = min(SPLIT_SIZES, key=SPLIT_SIZES.__getitem__)
        classes = SPLIT_SIZES[split] * (ROTATIONS if self.classes == "rotations" else 1)
        if not 2 <= self.ways <= classes:
            raise ZooError(
                f"ways must be between 2 and {classes} (the {split} split has {classes} "
                f"classes), got {self.ways}"
            )


def split_characters(characters: Sequence[str]) -> dict[str, torch.Tensor]:
    """Indices into ``characters`` of each split's characters, in shuffled order.

    The order depends only on the characters' names (see the module docstring).
    """
    if len(characters) != sum(SPLIT_SIZES.values()):
        raise ZooError(f"expected {sum(SPLIT_SIZES.values())} Omniglot characters, got {len(characters)}")

    def key(i: int) -> bytes:
        return hashlib.sha256(f"{SPLIT_SEED}:{characters[i]}".encode()).digest()

    order = sorted(range(len(characters)), key=key)
    splits, start = {}, 0
    for split, size in SPLIT_SIZES.items():
        splits[split] = torch.tensor(order[start : start + size], dtype=torch.int64)
        start += size
    return splits


class Omniglot(TaskSuite):
    """N-way K-shot tasks on Omniglot; the images load on first use, not at construction."""

    name = "omniglot"
    kind = "classification"

    def __init__(self, data_dir: str | None = None, **protocol):
        self.config = build_config(OmniglotConfig, protocol, "suite omniglot")
        self.data_dir = data_dir  # where the zips are (None: $METAZOO_DATA or the cache); not protocol

    def prepare(self) -> None:
        """Find, verify and decode the images (cached), so that missing data stops a bench early."""
        self.data  # noqa: B018

    @property
    def ways(self) -> int:
        return self.config.ways

    @cached_property
    def data(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The images ``[1623, 20, S, S]`` uint8 and each split's character indices (loaded once)."""
        loaded = load_omniglot(self.data_dir, self.config.image_size)
        return loaded.images, split_characters(loaded.characters)

    def classes(self, split: str) -> torch.Tensor:
        """``[n_classes, 2]``: each class's character index and quarter turns."""
        check_split(split)
        characters = self.data[1][split]
        return torch.stack(
            [characters.repeat_interleave(ROTATIONS), torch.arange(ROTATIONS).repeat(len(characters))],
            dim=1,
        )

    def sample(self, split, num_tasks, generator):
        c = self.config
        if c.classes == "rotations":
            table = self.classes(split)  # [C, 2]
            chosen = table[draw_distinct(generator, num_tasks, len(table), c.ways)]  # [T, N, 2]
        else:
            check_split(split)
            characters = self.data[1][split]
            picked = characters[draw_distinct(generator, num_tasks, len(characters), c.ways)]  # [T, N]
            turns = torch.randint(ROTATIONS, (num_tasks, c.ways), generator=generator)  # [T, N]
            chosen = torch.stack([picked, turns], dim=2)  # [T, N, 2]
        drawings = draw_distinct(generator, num_tasks * c.ways, DRAWINGS, c.shots + c.queries)
        drawings = drawings.view(num_tasks, c.ways, -1)  # [T, N, K+Q], distinct per class
        support = self._take(chosen, drawings[:, :, : c.shots], generator)
        query = self._take(chosen, drawings[:, :, c.shots :], generator)
        return TaskBatch(*support, *query)

    def num_classes(self, split):
        """Classes of ``split`` in labelled batches: its characters times four rotations."""
        return len(self.classes(split))

    def sample_labelled(self, split, batch_size, generator):
        """``batch_size`` images of ``split``, uniformly drawn, labelled by their class (the row of
        :meth:`classes`: character and quarter turns)."""
        own = split_stream(generator, split)  # the split's own stream; refuses an unknown split
        table = self.classes(split)  # [C, 2]
        labels = torch.randint(len(table), (batch_size,), generator=own)  # [B]
        drawings = torch.randint(DRAWINGS, (batch_size,), generator=own)  # [B]
        character, turns = table[labels].unbind(1)
        x = _rotate(self.data[0][character, drawings].unsqueeze(0), turns.unsqueeze(0))[0]  # [B, S, S]
        return LabelledBatch(x.unsqueeze(1).float().div_(255), labels)

    def _take(
        self, chosen: torch.Tensor, drawings: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[T, M, 1, S, S]`` and labels ``[T, M]`` of ``drawings[t, label]``, shuffled.

        ``chosen [T, N, 2]`` holds each label's character and quarter turns.
        """
        num_tasks, ways, per_class = drawings.shape
        labels = torch.arange(ways).repeat_interleave(per_class).expand(num_tasks, -1)  # [T, M]
        order = draw_distinct(generator, num_tasks, ways * per_class, ways * per_class)  # [T, M]
        labels = labels.gather(1, order)
        drawings = drawings.flatten(1).gather(1, order)  # [T, M]
        character = chosen[..., 0].gather(1, labels)  # [T, M]
        x = self.data[0][character, drawings]  # [T, M, S, S] uint8
        x = _rotate(x, chosen[..., 1].gather(1, labels))
        return x.unsqueeze(2).float().div_(255), labels

    def make_model(self):
        from metazoo.models import Conv4  # lazily: only the suite's users need the backbone

        c = self.config
        return Conv4(in_channels=1, out_features=c.ways, image_size=c.image_size)


def _rotate(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Turn each image ``x[t, m]`` (``[T, M, S, S]``) by ``turns[t, m]`` quarter turns."""
    turns = turns[..., None, None]  # [T, M, 1, 1]
    for k in range(1, ROTATIONS):
        x = torch.where(turns == k, torch.rot90(x, k, dims=(-2, -1)), x)
    return x


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add(
        "omniglot",
        Omniglot,
        uses_data=True,
        paper=PAPER,
        summary="few-shot classification of handwritten characters (real Omniglot images, "
        "1100/100/423 character split, rotations as new classes)",
    )
