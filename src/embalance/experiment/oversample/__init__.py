"""Oversamplers computed in PyTorch: random, SMOTE, Borderline-SMOTE, ADASYN and a VAE.

Every class follows imbalanced-learn's contract (see STYLE.md point 4): it subclasses
`imblearn.over_sampling.base.BaseOverSampler`, its keyword-only ``__init__`` only stores its
arguments, and the work happens in ``_fit_resample``. ``sampling_strategy`` and ``random_state``
mean what they mean in imbalanced-learn, and the output is laid out the same way: the original
samples first, unchanged, then the synthetic samples class by class (in the order of
``sampling_strategy_``).

The sampling rules are imbalanced-learn's (its source is the reference, and the tests compare
against it):

- SMOTE: a synthetic point is ``x + u * (x_nn - x)`` with ``x`` a minority sample drawn uniformly,
  ``x_nn`` one of its ``k_neighbors`` nearest minority neighbours (the point itself excluded) drawn
  uniformly, and ``u ~ U[0, 1)``.
- Borderline-SMOTE: a minority sample is *in danger* when ``m/2 <= m' < m`` of its ``m_neighbors``
  nearest neighbours in the whole data set belong to another class (``m' == m`` is noise and is
  left out). Only samples in danger are interpolated from. ``"borderline-1"`` interpolates towards
  minority neighbours; ``"borderline-2"`` towards any of the ``k_neighbors`` nearest neighbours in
  the whole data set, and when that neighbour is not of the minority class the step is multiplied
  by ``U[0, 0.5)``, so the point stays nearer to the minority sample.
- ADASYN: each minority sample gets the weight ``r_i`` = fraction of its ``n_neighbors`` nearest
  neighbours (whole data set, one-vs-rest) that are not of its class; the weights are normalised to
  sum to one and sample ``i`` generates ``rint(r_i * n_new)`` points by SMOTE interpolation towards
  its minority neighbours. As in imbalanced-learn the total can differ slightly from the requested
  count because of the rounding; ``n_synthetic_`` says how many were made.

Where imbalanced-learn crashes or silently does nothing, an explicit policy applies, chosen by a
parameter, and what happened is recorded in the fitted attributes ``status_`` and ``reason_``:

- a class with ``n_min <= k`` samples (``on_small_class``): ``"clip"`` (default) uses
  ``k = n_min - 1`` and sets ``status_ = "clipped_k"``; ``"raise"`` raises
  `InfeasibleResampling` with status ``"too_few_minority"``. A class with a single sample cannot be
  interpolated and always raises ``"too_few_minority"``.
- Borderline-SMOTE finding no sample in danger (``on_no_danger``): ``"raise"`` (default) or
  ``"skip"`` (that class gets no synthetic sample; ``status_ = "no_danger"``).
- ADASYN finding no majority neighbour for any minority sample (``on_no_majority_neighbour``):
  ``"raise"`` (default) or ``"skip"`` (``status_ = "no_majority_neighbour"``).
- ADASYN's rounding leaving nothing to make for a class (``rint(r_i * n_new)`` is 0 for every sample,
  e.g. a class a few rows short of the majority spread over many samples; imbalanced-learn raises):
  the class is always skipped (``status_ = "rounding_to_zero"``), the other classes are resampled.

Every skipped class is recorded in the fitted ``skipped_`` (class -> status) and its reason in
``reason_``; its ``n_synthetic_`` is 0.

Statuses: ``"ok"``, ``"clipped_k"``, ``"no_danger"``, ``"no_majority_neighbour"``,
``"rounding_to_zero"`` (fitted), and the `InfeasibleResampling` statuses ``"too_few_minority"``,
``"too_few_samples"`` (fewer samples in the whole data set than ``m_neighbors``/``n_neighbors`` + 1),
``"no_danger"`` and ``"no_majority_neighbour"``.
When several classes are resampled, ``status_`` is the most severe class status and ``reason_``
joins the reasons.

Computation: the data are moved once to ``device`` (``"auto"`` = CUDA when available). Neighbour
searches are batched matrix products (``||x||^2 - 2 q.x`` then ``topk``) in the input's float
type; only the minority samples are ever queried. All synthetic points of a class are made by one
gather and one ``lerp``. Randomness comes from a local `torch.Generator` seeded from
``random_state``; the global random states of numpy and torch are never touched. The same seed
gives the same arrays on the same device type; CPU and CUDA draw different streams.

Input: a dense 2-D array of finite numbers. float32 stays float32, every other numeric type becomes
float64. Sparse input is rejected (the samplers work on dense embeddings).
"""

from __future__ import annotations

from imblearn.over_sampling.base import BaseOverSampler

from embalance.experiment.oversample.random import RandomOverSampler
from embalance.experiment.oversample.smote import ADASYN, SMOTE, BorderlineSMOTE
from embalance.experiment.oversample.vae import VAE, VAEConfig, VAEOverSampler, build_vae, vae_checkpoint

__all__ = [
    "ADASYN",
    "SAMPLERS",
    "SMOTE",
    "VAE",
    "BorderlineSMOTE",
    "RandomOverSampler",
    "VAEConfig",
    "VAEOverSampler",
    "build_vae",
    "vae_checkpoint",
]

SAMPLERS: dict[str, type[BaseOverSampler]] = {
    "random": RandomOverSampler,
    "smote": SMOTE,
    "borderline": BorderlineSMOTE,
    "adasyn": ADASYN,
    "vae": VAEOverSampler,
}
