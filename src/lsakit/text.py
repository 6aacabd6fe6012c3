"""Text classifiers in embedding space: LSA and adversarial training of Hugging Face models.

Token ids are discrete, so the attacks and noises of LSA perturb a text model's *input
embeddings* instead — the usual continuous relaxation (Miyato et al. 2017, "Adversarial training
methods for semi-supervised text classification"; Zhu et al. 2020, FreeLB). Two pieces make any
Hugging Face sequence classifier (anything taking ``inputs_embeds=`` and ``attention_mask=`` and
returning ``.logits``) an ordinary lsakit model whose input is a float tensor:

* :class:`EmbeddingClassifier` wraps the model: ``forward(x)`` with ``x`` the word embeddings
  (N, T, H) runs ``model(inputs_embeds=x·m, attention_mask=m)`` with the batch's attention mask m.
  Padding positions are zeroed, so a perturbation there has no effect (and no gradient).
* :class:`TextBatches` turns tokenized batches (dicts with ``input_ids``, ``attention_mask``,
  ``labels`` — what a tokenizer and a collator give) into ``(embeddings, labels)`` batches and, as
  it yields each one, hands its attention mask to the wrapper. It carries the unbounded input
  domain (:mod:`lsakit.domain`): ε is in embedding units and nothing is clipped.

So :func:`lsakit.analyze`, :func:`lsakit.evaluate.evaluate`, the attacks and the trainer's loop
(:func:`lsakit.train.loop.run_epoch`) run unchanged::

    clf = EmbeddingClassifier(hf_model)
    batches = TextBatches(clf, tokenized_batches)
    result = lsakit.analyze(clf, batches, {"fgsm": FGSM(clf, eps=0.05)})
    for epoch in range(3):
        train_epoch(clf, batches, build_objective("pgd", eps=0.05, steps=3), optimizer,
                    regularizer=LayerwiseRegularizer(["L1"]))

The mask is the batch's: every consumer processes one batch completely (clean forward, attack,
perturbed forward) before asking for the next, which is what lsakit's loops do. A forward on a
tensor whose (N, T) differs from the current mask's — another batch, or part of one — is refused
with a clear error rather than paired with the wrong mask.

Choices where nothing is standard: embeddings are the model's word embeddings
(``get_input_embeddings()``) without position/type embeddings, which the model adds itself; the
embedding table is trained (its output is the attack's starting point, recomputed each batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from lsakit.domain import UNBOUNDED, InputDomain, declared_by
from lsakit.errors import InputError

if TYPE_CHECKING:
    from lsakit.train.objectives import Objective
    from lsakit.train.regularizers import Regularizer


class EmbeddingClassifier(nn.Module):
    """A Hugging Face sequence classifier as a function of its input embeddings (N, T, H) → logits.

    Args:
        model: the classifier; it must accept ``inputs_embeds`` and ``attention_mask`` and return
            an output with ``logits`` (or a tensor).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        embeddings = getattr(model, "get_input_embeddings", None)
        if not callable(embeddings) or not isinstance(embeddings(), nn.Module):
            raise InputError(
                f"{type(model).__name__} has no get_input_embeddings(); EmbeddingClassifier "
                "wraps Hugging Face models that take inputs_embeds="
            )
        self.model = model
        self.attention_mask: Tensor | None = None

    def embed(self, input_ids: Tensor) -> Tensor:
        """The word embeddings of ``input_ids`` (N, T) → (N, T, H), differentiable."""
        table = self.model.get_input_embeddings()  # type: ignore[operator]
        out: Tensor = table(input_ids)
        return out

    def forward(self, x: Tensor) -> Tensor:
        mask = self.attention_mask
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        elif tuple(mask.shape) != tuple(x.shape[:2]):
            raise InputError(
                f"embeddings of shape {tuple(x.shape)} do not match the attention mask "
                f"{tuple(mask.shape)} of the current batch; feed the model through TextBatches "
                f"and process each batch whole (no sub-batches)"
            )
        mask = mask.to(x.device)
        out = self.model(inputs_embeds=x * mask[..., None].to(x.dtype), attention_mask=mask)
        logits = out if isinstance(out, Tensor) else out["logits"]
        return logits


class TextBatches:
    """Tokenized batches → ``(embeddings, labels)``, setting each batch's attention mask.

    Args:
        classifier: the :class:`EmbeddingClassifier` the batches are for.
        batches: an iterable (re-iterable, e.g. a DataLoader or a list) of mappings with
            ``input_ids`` (N, T), ``labels`` (N,) and optionally ``attention_mask`` (N, T).

    The embeddings are computed without gradient (they are the attack's and the analysis's
    starting point). The object carries the unbounded input domain.
    """

    def __init__(
        self, classifier: EmbeddingClassifier, batches: Iterable[Mapping[str, Tensor]]
    ) -> None:
        if not isinstance(classifier, EmbeddingClassifier):
            raise InputError("TextBatches needs the EmbeddingClassifier the batches feed")
        self.classifier = classifier
        self.batches = batches
        self.input_domain: InputDomain = UNBOUNDED  # carried as lsakit.domain.attach_domain does

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = next(self.classifier.parameters()).device
        for index, batch in enumerate(self.batches):
            for key in ("input_ids", "labels"):
                if key not in batch:
                    raise InputError(
                        f"text batch {index} has no {key!r} (keys: {', '.join(batch)}); give "
                        f"tokenized batches with input_ids, attention_mask and labels"
                    )
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask.to(device)
            if mask.shape != ids.shape:
                raise InputError(
                    f"text batch {index}: attention_mask {tuple(mask.shape)} and input_ids "
                    f"{tuple(ids.shape)} differ in shape"
                )
            with torch.no_grad():
                x = self.classifier.embed(ids).detach()
            self.classifier.attention_mask = mask
            yield x, batch["labels"].to(device)
        self.classifier.attention_mask = None


def train_epoch(
    classifier: EmbeddingClassifier,
    batches: TextBatches,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    *,
    regularizer: Regularizer | Sequence[Regularizer] | None = None,
) -> dict[str, float]:
    """One epoch of (adversarial) training in embedding space: the trainer's loop
    (:func:`lsakit.train.loop.run_epoch`) over the batches, with the regularizers if given
    (prepared on the first batch, which sets its attention mask first). Returns the mean loss,
    mean regularizer term and training accuracy."""
    from lsakit.train.loop import Run, run_epoch
    from lsakit.train.step import as_list

    run = Run(
        model=classifier, net=classifier, objective=objective,
        regularizers=as_list(regularizer), optimizer=optimizer,
    )  # fmt: skip
    with declared_by(batches):
        totals = run_epoch(run, batches)
    n = max(totals.seen, 1.0)
    return {"loss": totals.loss / n, "reg": totals.reg / n, "accuracy": totals.correct / n}


__all__ = ["EmbeddingClassifier", "TextBatches", "train_epoch"]
