"""Language-model data: words to ids, windows, Penn Treebank files on request, and a clear error without them."""

from __future__ import annotations

import urllib.request

import pytest
import torch

from lightning_hypergrad.data import TextDataModule, synthetic_corpus
from lightning_hypergrad.data.text import PTB_FILES, Vocabulary, WindowDataset


def write_corpus(root, sentences=(400, 60, 60)) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, count, seed in zip(PTB_FILES, sentences, (0, 1, 2)):
        (root / name).write_text(synthetic_corpus(count, seed))


def test_windows_predict_the_next_word() -> None:
    ids = torch.arange(11)
    dataset = WindowDataset(ids, sequence_length=4)
    assert len(dataset) == 2  # ids 0..10: two full windows of 4 inputs plus the next word
    inputs, targets = dataset[1]
    assert inputs.tolist() == [4, 5, 6, 7] and targets.tolist() == [5, 6, 7, 8]


def test_vocabulary_encodes_in_order_of_appearance_and_refuses_unknown_words() -> None:
    vocabulary = Vocabulary(["a", "b", "a", "<eos>"])
    assert len(vocabulary) == 3 and vocabulary.encode(["b", "<eos>", "a"]).tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match=r"1 words are missing from the training vocabulary, e.g. \['zebra'\]"):
        vocabulary.encode(["a", "zebra"])


def test_the_datamodule_reads_a_local_corpus(tmp_path) -> None:
    write_corpus(tmp_path)
    module = TextDataModule(root=str(tmp_path), sequence_length=10, batch_size=8, hyper_batch_size=5)
    module.setup("fit")
    assert len(module.vocabulary) == 27  # the grammar's words and <eos>
    inputs, targets = next(iter(module.train_dataloader()))
    assert inputs.shape == targets.shape == (8, 10)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert next(iter(module.hyper_dataloader()))[0].shape == (5, 10)
    assert len(module.val_dataloader().dataset) > 0 and len(module.test_dataloader().dataset) > 0


def test_missing_files_without_download_name_the_fix(tmp_path) -> None:
    module = TextDataModule(root=str(tmp_path))
    module.prepare_data()
    with pytest.raises(FileNotFoundError, match=r"not found under .*Pass download=True"):
        module.setup("fit")


def test_a_failed_download_explains_itself(tmp_path, monkeypatch) -> None:
    def offline(url, target):
        raise OSError("no route to host")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    module = TextDataModule(root=str(tmp_path / "ptb"), download=True)
    with pytest.raises(RuntimeError, match=r"Could not download ptb.train.txt to .*no route to host.*download=False"):
        module.prepare_data()
    assert not (tmp_path / "ptb" / "ptb.train.txt").exists()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r"TextDataModule\(sequence_length=0\): sequence_length must be an integer >= 1"
    ):
        TextDataModule(sequence_length=0)
    with pytest.raises(ValueError, match=r"give exactly three names"):
        TextDataModule(files=["a.txt"])
