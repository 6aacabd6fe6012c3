"""Data as a pretrained model takes it: its input transform, and its own labels.

* :class:`Transformed` applies a model's input transform (resize, crop, grey → RGB:
  :meth:`lsakit.models.Preprocessing.transform`) to each sample as it is read, so that a data set
  of small images is never held in memory at the model's larger size.
* :class:`PredictedLabels` replaces a loader's labels with the model's own predictions on the
  clean inputs: an ImageNet classifier analysed on CIFAR-10 has 1000 classes where the data has
  10, and an attack needs labels in the model's classes. The attacks then push each input away
  from the class the model gives it (the convention of LSA on pretrained models: the clean
  prediction is the reference); the clean accuracy is then 1 by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lsakit._outputs import select_logits
from lsakit._torch import eval_mode, model_device


class Transformed(Dataset[tuple[Tensor, Tensor]]):
    """``dataset`` with ``transform`` applied to each sample's input (labels unchanged)."""

    def __init__(self, dataset: Dataset[Any], transform: Callable[[Tensor], Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.dataset[index]
        return self.transform(x.unsqueeze(0)).squeeze(0), y


class PredictedLabels:
    """Iterate ``loader`` with each batch's labels replaced by ``model``'s predictions (argmax of
    the logits on the clean inputs, in eval mode, without gradients)."""

    def __init__(self, loader: DataLoader[Any], model: nn.Module) -> None:
        self.loader = loader
        self.model = model

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = model_device(self.model)
        for x, _ in self.loader:
            with torch.no_grad(), eval_mode(self.model):
                logits = select_logits(self.model(x.to(device)))
            yield x, logits.argmax(dim=1).to(x.device)

    def __getattr__(self, name: str) -> Any:  # dataset, batch_size, … of the loader
        return getattr(self.loader, name)
