"""Perturbations for LSA: statistical noise and white-box attacks (Khalooei et al., 2022, Sec. 3).

Every perturbation is called as ``perturbation(x, y) -> x_perturbed`` on a batch in [0, 1]:

* noise (``is_adversarial = False``): :class:`GaussianNoise`, :class:`SaltNoise`,
  :class:`PepperNoise`, :class:`SaltPepperNoise`, :class:`SpeckleNoise`;
* attacks (need the model and labels): :class:`FGSM`, :class:`PGD` / :class:`PGDL2`, :class:`APGD`,
  :class:`APGDT` (targeted DLR), :class:`FABT` (targeted minimal-norm boundary attack),
  :class:`Square` (black-box), :class:`CWLinf` (margin-loss PGD),
  :class:`MIFGSM` (momentum), and :class:`EOTPGD` / :class:`EOTAPGD` for randomized models.

Build them by name with :func:`build` or from a CLI spec such as ``pgd=0.3,steps=40`` with
:func:`from_spec`.
"""

from __future__ import annotations

from lsakit.perturb.apgd import APGD, dlr_loss
from lsakit.perturb.apgd_targeted import APGDT, targeted_dlr_loss
from lsakit.perturb.base import (
    Attack,
    Perturbation,
    clamp_unit,
    cross_entropy_per_sample,
    project_l2,
    project_linf,
)
from lsakit.perturb.cw import CWLinf, cw_margin_loss
from lsakit.perturb.eot import EOTAPGD, EOTPGD
from lsakit.perturb.fab import FABT, projection_linf
from lsakit.perturb.fgsm import FGSM
from lsakit.perturb.mifgsm import MIFGSM
from lsakit.perturb.noise import (
    GaussianNoise,
    PepperNoise,
    SaltNoise,
    SaltPepperNoise,
    SpeckleNoise,
)
from lsakit.perturb.pgd import PGD, PGDL2
from lsakit.perturb.registry import (
    build,
    from_spec,
    is_adversarial,
    names,
    parse_spec,
    strength_parameter,
)
from lsakit.perturb.square import Square

__all__ = [
    "APGD",
    "APGDT",
    "EOTAPGD",
    "EOTPGD",
    "FABT",
    "FGSM",
    "MIFGSM",
    "PGD",
    "PGDL2",
    "Attack",
    "CWLinf",
    "GaussianNoise",
    "PepperNoise",
    "Perturbation",
    "SaltNoise",
    "SaltPepperNoise",
    "SpeckleNoise",
    "Square",
    "build",
    "clamp_unit",
    "cross_entropy_per_sample",
    "cw_margin_loss",
    "dlr_loss",
    "from_spec",
    "is_adversarial",
    "names",
    "parse_spec",
    "project_l2",
    "project_linf",
    "projection_linf",
    "strength_parameter",
    "targeted_dlr_loss",
]
