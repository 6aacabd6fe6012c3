"""Hugging Face text classifiers in embedding space (lsakit.text), on a real BERT class."""

from __future__ import annotations

import pytest
import torch

from lsakit import analyze
from lsakit.domain import UNBOUNDED
from lsakit.errors import InputError
from lsakit.perturb import FGSM, PGD, GaussianNoise
from lsakit.text import EmbeddingClassifier, TextBatches, train_epoch
from lsakit.train.objectives import build_objective
from lsakit.train.regularizers import LayerwiseRegularizer

transformers = pytest.importorskip(
    "transformers", reason="lsakit.text wraps transformers models: pip install 'lsakit[hf]'"
)


def _bert() -> EmbeddingClassifier:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    return EmbeddingClassifier(transformers.BertForSequenceClassification(config).eval())


def _batches(n_batches: int = 2) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(1, 50, (4, 8), generator=g)
        mask = torch.ones(4, 8, dtype=torch.long)
        mask[2:, 5:] = 0  # two padded sequences
        ids[mask == 0] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids[:, 0] % 2})
    return out


def test_embedding_forward_equals_the_token_forward() -> None:
    clf = _bert()
    batch = _batches(1)[0]
    with torch.no_grad():
        want = clf.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        ((x, _),) = list(TextBatches(clf, [batch]))
        clf.attention_mask = batch["attention_mask"]
        got = clf(x)
    # Padding embeddings are zeroed: masked positions do not affect the unpadded outputs.
    torch.testing.assert_close(got, want.logits, rtol=1e-5, atol=1e-5)


def test_analyze_in_embedding_space_with_padding_untouched() -> None:
    clf = _bert()
    batches = TextBatches(clf, _batches())
    assert batches.input_domain == UNBOUNDED
    result = analyze(
        clf, batches,
        {"fgsm": FGSM(clf, eps=0.5), "gaussian": GaussianNoise(std=0.5, seed=0)},
    )  # fmt: skip
    assert result.n_samples == 8 and result.input_domain == UNBOUNDED.to_json()
    names = [layer.module_name for layer in result.layers]
    assert any("intermediate" in n for n in names) and any("pooler" in n for n in names)
    fgsm = result.perturbation("fgsm")
    assert fgsm.mu is not None and fgsm.mu > 0
    # The attack's step on padded positions has no effect: their gradient is exactly zero.
    batch = _batches(1)[0]
    ((x, y),) = list(TextBatches(clf, [batch]))
    clf.attention_mask = batch["attention_mask"]
    from lsakit.domain import input_domain

    with input_domain(None):
        x_adv = PGD(clf, eps=0.5, steps=3, random_start=False)(x, y)
    padded = batch["attention_mask"] == 0
    assert torch.equal(x_adv[padded], x[padded]) and not torch.equal(x_adv[~padded], x[~padded])


def test_adversarial_training_with_the_regularizer_learns() -> None:
    clf = _bert()
    data = _batches(4)
    batches = TextBatches(clf, data)
    optimizer = torch.optim.Adam(clf.parameters(), lr=1e-2)
    objective = build_objective("pgd", eps=0.1, steps=2)
    reg = LayerwiseRegularizer(["L0"], gamma=0.1)
    first = train_epoch(clf, batches, objective, optimizer, regularizer=reg)
    for _ in range(8):
        last = train_epoch(clf, batches, objective, optimizer, regularizer=reg)
    assert first["reg"] > 0
    assert last["loss"] < first["loss"]


def test_sub_batches_are_refused() -> None:
    clf = _bert()
    ((x, _),) = list(TextBatches(clf, _batches(1)))
    clf.attention_mask = torch.ones(4, 8, dtype=torch.long)
    with pytest.raises(InputError, match="do not match the attention mask"):
        clf(x[:2])
