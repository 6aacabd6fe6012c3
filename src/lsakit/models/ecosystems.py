"""Models of the ecosystems researchers use: torchvision, timm and Hugging Face transformers.

Each source builds random weights by default and loads pretrained weights in the ecosystem's own
words, through the ecosystem's own loading code (its downloads, caches, hash checks and offline
switches), never a copy of it:

=====================================================  ===============================================
spec and model arguments                                weights
=====================================================  ===============================================
``torchvision:NAME weights=DEFAULT|ENUM_NAME``          torchvision's weights API: ``Weights.get_state_dict
                                                        (check_hash=True, weights_only=True)`` into
                                                        ``$TORCH_HOME/hub/checkpoints``; a
                                                        ``torchvision.models.Weights`` object works too
``timm:NAME[.TAG] pretrained=true``,                    ``timm.create_model(…, pretrained=True)``: the
``timm:hf-hub:ORG/REPO[@REV]``                          Hugging Face hub (``HF_HOME``, ``HF_ENDPOINT``,
                                                        ``HF_HUB_OFFLINE``) or the torch hub cache
``hf:ORG/NAME revision=REV``                            ``AutoModelFor…Classification.from_pretrained``
                                                        with safetensors only and no remote code
``hf:DIR`` (a local folder or config.json)              a config: random weights (as before)
=====================================================  ===============================================

A pretrained model comes back as a :class:`~lsakit.models.pretrained.Loaded`: the weights'
preprocessing split into the data transform and a normalization inside the model
(:mod:`lsakit.models.pretrained`), the class names of the weights' metadata and where the weights
came from (:class:`~lsakit.models.pretrained.Provenance`: the file's sha256, the resolved commit
of a hub repo).

For a checkpoint, the weights' arguments are replaced by ``preprocessing`` (the normalization's
constants and the data transform, :meth:`ModelSource.portable`): rebuilding a fine-tuned model
from its checkpoint builds the architecture and its normalization and never downloads.

The sources live one module per ecosystem: :mod:`~lsakit.models.ecosystem_torchvision`,
:mod:`~lsakit.models.ecosystem_timm` and :mod:`~lsakit.models.ecosystem_hf` (with
:class:`HFClassifier`); what they share is in :mod:`~lsakit.models.ecosystem_shared`. This
module gathers their names where they have always been imported from.
"""

from __future__ import annotations

from lsakit.models.ecosystem_hf import HF_TASKS, HFClassifier, hf_is_local, hf_source
from lsakit.models.ecosystem_shared import (
    PREPROCESSING,
    cached_hub_file,
    flag,
    hub_error,
    load_matching,
    normalized,
    recorded_preprocessing,
)
from lsakit.models.ecosystem_timm import timm_source
from lsakit.models.ecosystem_torchvision import torchvision_source

__all__ = [
    "HF_TASKS",
    "PREPROCESSING",
    "HFClassifier",
    "cached_hub_file",
    "flag",
    "hf_is_local",
    "hf_source",
    "hub_error",
    "load_matching",
    "normalized",
    "recorded_preprocessing",
    "timm_source",
    "torchvision_source",
]
