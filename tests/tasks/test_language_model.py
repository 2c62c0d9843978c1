"""The LSTM language model tunes its per-unit dropout rates on a corpus generated in code."""

from __future__ import annotations

import lightning as L
import torch

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.data import TextDataModule
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.tasks import LSTMLanguageModel
from tests.data.test_text import write_corpus
from tests.lightning_helpers import make_trainer


def test_dropout_rates_move_and_the_model_learns_the_grammar(tmp_path) -> None:
    write_corpus(tmp_path)
    data = TextDataModule(root=str(tmp_path), sequence_length=12, batch_size=16, hyper_batch_size=16)
    data.setup("fit")
    L.seed_everything(0, verbose=False)
    model = LSTMLanguageModel(
        vocabulary_size=len(data.vocabulary), embedding_size=16, hidden_size=24, initial_rate=0.3, learning_rate=1e-2
    )
    start = [logit.detach().clone() for logit in model.hyperparameters()]
    callback = HypergradientCallback(
        Neumann(iterations=5), hyper_optimizer=lambda p: torch.optim.Adam(p, lr=0.05), every_n_steps=5, warmup_steps=20
    )
    trainer = make_trainer([callback], max_steps=60, max_epochs=-1)
    trainer.fit(model, data)
    assert callback.taken == 8 and callback.skipped == 0
    assert all(not torch.equal(logit.detach(), before) for logit, before in zip(model.hyperparameters(), start))
    # The grammar has 27 words; a model that learned it predicts far better than uniform guessing.
    assert float(trainer.callback_metrics["validation_perplexity"]) < 8.0
    assert sum(p.numel() for p in model.hyperparameters()) == 16 + 24
