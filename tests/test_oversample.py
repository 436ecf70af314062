"""Tests of embalance.oversample against imbalanced-learn, the reference implementation."""

from __future__ import annotations

from collections import Counter

import imblearn.over_sampling as imb
import numpy as np
import pytest
import torch
from imblearn.pipeline import make_pipeline
from imblearn.utils.estimator_checks import parametrize_with_checks
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import InvalidParameterError

from embalance.errors import ConfigError, InfeasibleResampling
from embalance.experiment.oversample import (
    ADASYN,
    SAMPLERS,
    SMOTE,
    VAE,
    BorderlineSMOTE,
    RandomOverSampler,
    VAEConfig,
    VAEOverSampler,
    build_vae,
    kneighbors,
    vae_checkpoint,
)

# ----------------------------------------------------------------------------------------------
# data


def three_classes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussians: 120 / 25 / 40 samples in 4-D, so every sampler has danger samples."""
    rng = np.random.default_rng(seed)
    X = np.vstack(
        [
            rng.normal(0.0, 1.0, (120, 4)),
            rng.normal(1.0, 1.0, (25, 4)),
            rng.normal(-1.0, 1.0, (40, 4)),
        ]
    )
    y = np.repeat([0, 1, 2], [120, 25, 40])
    return X, y


def binary(
    seed: int = 0, n_maj: int = 150, n_min: int = 30, shift: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0.0, 1.0, (n_maj, 3)), rng.normal(shift, 1.0, (n_min, 3))])
    y = np.repeat([0, 1], [n_maj, n_min])
    return X, y


def small_cluster(n_min: int) -> tuple[np.ndarray, np.ndarray]:
    """A tight cluster of ``n_min`` minority samples inside the majority: in danger, never noise."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0.0, 1.0, (150, 3)), rng.normal(0.3, 0.02, (n_min, 3))])
    return X, np.repeat([0, 1], [150, n_min])


NEIGHBOUR_PAIRS = [
    (SMOTE, imb.SMOTE, {}),
    (BorderlineSMOTE, imb.BorderlineSMOTE, {"kind": "borderline-1"}),
    (BorderlineSMOTE, imb.BorderlineSMOTE, {"kind": "borderline-2"}),
    (ADASYN, imb.ADASYN, {}),
]
ALL_PAIRS = [(RandomOverSampler, imb.RandomOverSampler, {}), *NEIGHBOUR_PAIRS]


def pair_id(pair: tuple) -> str:
    return pair[0].__name__ + "".join(f"-{v}" for v in pair[2].values())


def synthetic_of(X: np.ndarray, X_res: np.ndarray, y_res: np.ndarray, klass: int) -> np.ndarray:
    """The synthetic rows of class ``klass`` (they follow the originals)."""
    tail_X, tail_y = X_res[len(X) :], y_res[len(X) :]
    return tail_X[tail_y == klass]


def segment_fit(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point, the best (residual, step) over all segments start -> end.

    step solves min_t ||p - (a + t (b - a))||; residual is the distance left at that step.
    """
    direction = ends - starts  # (S, d)
    offset = points[:, None, :] - starts[None, :, :]  # (P, S, d)
    step = (offset * direction).sum(-1) / (direction * direction).sum(-1)  # (P, S)
    residual = np.linalg.norm(offset - step[..., None] * direction, axis=-1)  # (P, S)
    best = residual.argmin(axis=1)
    rows = np.arange(len(points))
    return residual[rows, best], step[rows, best]


def knn_pairs(queries: np.ndarray, pool: np.ndarray, k: int, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """(query, neighbour) index pairs of each query's k nearest rows of pool, itself excluded."""
    nn = NearestNeighbors(n_neighbors=k + 1 if same else k).fit(pool)
    idx = nn.kneighbors(queries, return_distance=False)
    idx = idx[:, 1:] if same else idx
    return np.repeat(np.arange(len(queries)), idx.shape[1]), idx.ravel()


# ----------------------------------------------------------------------------------------------
# parity with imbalanced-learn


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
@pytest.mark.parametrize("strategy", ["auto", "minority", "not majority", "all", {1: 90, 2: 60}], ids=str)
def test_class_counts_match_imblearn(pair: tuple, strategy: object) -> None:
    ours_cls, ref_cls, params = pair
    X, y = three_classes()
    X_ours, y_ours = ours_cls(sampling_strategy=strategy, random_state=0, **params).fit_resample(X, y)
    _, y_ref = ref_cls(sampling_strategy=strategy, random_state=0, **params).fit_resample(X, y)
    assert Counter(y_ours.tolist()) == Counter(y_ref.tolist())
    np.testing.assert_array_equal(X_ours[: len(X)], X)  # originals first, unchanged
    np.testing.assert_array_equal(y_ours[: len(X)], y)


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_float_ratio_binary_matches_imblearn(pair: tuple) -> None:
    ours_cls, ref_cls, params = pair
    X, y = binary()
    _, y_ours = ours_cls(sampling_strategy=0.6, random_state=0, **params).fit_resample(X, y)
    _, y_ref = ref_cls(sampling_strategy=0.6, random_state=0, **params).fit_resample(X, y)
    assert Counter(y_ours.tolist()) == Counter(y_ref.tolist())
    if ours_cls is not ADASYN:  # ADASYN rounds its per-sample counts (here to 94)
        assert Counter(y_ours.tolist()) == {0: 150, 1: 90}


@pytest.mark.parametrize("klass", [1, 2])
def test_smote_points_lie_on_minority_neighbour_segments(klass: int) -> None:
    X, y = three_classes()
    X_res, y_res = SMOTE(k_neighbors=5, random_state=0).fit_resample(X, y)
    X_min = X[y == klass]
    q, n = knn_pairs(X_min, X_min, 5, same=True)
    residual, step = segment_fit(synthetic_of(X, X_res, y_res, klass), X_min[q], X_min[n])
    assert residual.max() < 1e-10
    assert step.min() >= -1e-12 and step.max() <= 1 + 1e-12


def test_borderline1_points_lie_on_segments_from_danger_samples() -> None:
    X, y = binary()
    sampler = BorderlineSMOTE(kind="borderline-1", random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    danger = X[sampler.in_danger_indices_[1]]
    X_min = X[y == 1]
    nn = NearestNeighbors(n_neighbors=6).fit(X_min)
    neigh = nn.kneighbors(danger, return_distance=False)[:, 1:]
    q = np.repeat(np.arange(len(danger)), 5)
    residual, step = segment_fit(synthetic_of(X, X_res, y_res, 1), danger[q], X_min[neigh.ravel()])
    assert residual.max() < 1e-10
    assert step.min() >= -1e-12 and step.max() <= 1 + 1e-12


def test_borderline2_steps_towards_other_classes_are_at_most_half() -> None:
    X, y = binary()
    sampler = BorderlineSMOTE(kind="borderline-2", random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    danger = X[sampler.in_danger_indices_[1]]
    q, n = knn_pairs(danger, X, 5, same=True)
    synthetic = synthetic_of(X, X_res, y_res, 1)
    residual, step = segment_fit(synthetic, danger[q], X[n])
    assert residual.max() < 1e-10
    assert step.min() >= -1e-12 and step.max() <= 1 + 1e-12
    # the pairs towards majority neighbours only: every point explained by one has step <= 0.5
    to_majority = y[n] == 0
    res_maj, step_maj = segment_fit(synthetic, danger[q[to_majority]], X[n[to_majority]])
    res_min, _ = segment_fit(synthetic, danger[q[~to_majority]], X[n[~to_majority]])
    only_majority = (res_maj < 1e-10) & (res_min > 1e-6)
    assert only_majority.sum() > 10
    assert step_maj[only_majority].max() <= 0.5 + 1e-12


def test_adasyn_points_lie_on_minority_neighbour_segments() -> None:
    X, y = binary()
    X_res, y_res = ADASYN(random_state=0).fit_resample(X, y)
    X_min = X[y == 1]
    q, n = knn_pairs(X_min, X_min, 5, same=True)
    residual, step = segment_fit(synthetic_of(X, X_res, y_res, 1), X_min[q], X_min[n])
    assert residual.max() < 1e-10
    assert step.min() >= -1e-12 and step.max() <= 1 + 1e-12


@pytest.mark.parametrize("kind", ["borderline-1", "borderline-2"])
def test_danger_samples_match_imblearn(kind: str) -> None:
    X, y = three_classes()
    ours = BorderlineSMOTE(kind=kind, random_state=0)
    ref = imb.BorderlineSMOTE(kind=kind, random_state=0)
    ours.fit_resample(X, y)
    ref.fit_resample(X, y)
    assert ours.in_danger_indices_.keys() == ref.in_danger_indices.keys()
    for klass, rows in ref.in_danger_indices.items():
        np.testing.assert_array_equal(ours.in_danger_indices_[klass], rows)


def test_adasyn_per_sample_counts_match_imblearn_weights() -> None:
    X, y = three_classes()
    ours = ADASYN(n_neighbors=5, random_state=0)
    _, y_ours = ours.fit_resample(X, y)
    _, y_ref = imb.ADASYN(n_neighbors=5, random_state=0).fit_resample(X, y)
    nn = NearestNeighbors(n_neighbors=6).fit(X)
    for klass, n_new in ours.sampling_strategy_.items():
        # imbalanced-learn's weights, computed as in imblearn/over_sampling/_adasyn.py
        neigh = nn.kneighbors(X[y == klass], return_distance=False)[:, 1:]
        ratio = np.sum(y[neigh] != klass, axis=1) / 5
        ratio /= ratio.sum()
        expected = np.rint(ratio * n_new).astype(int)
        np.testing.assert_array_equal(ours.n_generated_per_sample_[klass], expected)
        assert ours.n_synthetic_[klass] == expected.sum() == np.sum(y_ref == klass) - np.sum(y == klass)
    assert Counter(y_ours.tolist()) == Counter(y_ref.tolist())


@pytest.mark.parametrize("pair", NEIGHBOUR_PAIRS, ids=pair_id)
def test_synthetic_distribution_matches_imblearn(pair: tuple) -> None:
    ours_cls, ref_cls, params = pair
    X, y = binary(n_maj=1500, n_min=40)
    X_min = X[y == 1]
    nn = NearestNeighbors(n_neighbors=1).fit(X_min)
    X_ours, y_ours = ours_cls(random_state=1, **params).fit_resample(X, y)
    X_ref, y_ref = ref_cls(random_state=1, **params).fit_resample(X, y)
    s_ours, s_ref = synthetic_of(X, X_ours, y_ours, 1), synthetic_of(X, X_ref, y_ref, 1)
    assert len(s_ours) == len(s_ref) > 1000
    # means agree within 4 standard errors of their difference
    np.testing.assert_array_less(
        np.abs(s_ours.mean(axis=0) - s_ref.mean(axis=0)), 4 * np.sqrt(2 / len(s_ref)) * s_ref.std(axis=0)
    )
    np.testing.assert_allclose(s_ours.std(axis=0), s_ref.std(axis=0), rtol=0.1)
    d_ours = nn.kneighbors(s_ours)[0].ravel()  # distance to the nearest real minority sample
    d_ref = nn.kneighbors(s_ref)[0].ravel()
    assert ks_2samp(d_ours, d_ref).pvalue > 0.01


def test_random_oversampler_draws_real_rows_and_records_them() -> None:
    X, y = three_classes()
    sampler = RandomOverSampler(random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    np.testing.assert_array_equal(X_res, X[sampler.sample_indices_])
    np.testing.assert_array_equal(y_res, y[sampler.sample_indices_])
    assert sampler.n_synthetic_ == {1: 95, 2: 80}
    assert sampler.k_effective_ == {}
    assert sampler.status_ == "ok" and sampler.reason_ == ""


# ----------------------------------------------------------------------------------------------
# randomness, dtypes, devices


ALL_SAMPLERS = [
    RandomOverSampler(),
    SMOTE(),
    BorderlineSMOTE(),
    BorderlineSMOTE(kind="borderline-2"),
    ADASYN(),
    VAEOverSampler(epochs=3),
    VAEOverSampler(epochs=3, sample_from="posterior"),
]


@pytest.mark.parametrize("sampler", ALL_SAMPLERS, ids=repr)
def test_same_seed_same_arrays_other_seed_other_arrays(sampler: object) -> None:
    X, y = three_classes()
    first = sampler.set_params(random_state=7).fit_resample(X, y)
    again = sampler.set_params(random_state=7).fit_resample(X, y)
    other = sampler.set_params(random_state=8).fit_resample(X, y)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[0].shape != other[0].shape or not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("tall", [True, False], ids=["scores-transposed", "scores-by-query"])
@pytest.mark.parametrize("max_block", [1 << 22, 200], ids=["one-block", "blocks"])
def test_neighbour_search_is_exact(monkeypatch: pytest.MonkeyPatch, tall: bool, max_block: int) -> None:
    # Both orientations of the score matrix, in one block and in several (candidates merged), against
    # scikit-learn's exact search; each query excludes itself.
    monkeypatch.setattr(kneighbors, "_TALL_QUERIES", 10**9 if tall else 0)
    monkeypatch.setattr(kneighbors, "_MAX_BLOCK", max_block)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 16)).astype(np.float32)
    rows = rng.choice(300, 40, replace=False)
    got = kneighbors._kneighbors(
        torch.from_numpy(data[rows]), torch.from_numpy(data), 5, exclude=torch.from_numpy(rows)
    )
    expected = NearestNeighbors(n_neighbors=6).fit(data).kneighbors(data[rows], return_distance=False)[:, 1:]
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("sampler", ALL_SAMPLERS[:5], ids=repr)
def test_arrays_do_not_depend_on_the_number_of_threads(sampler: object) -> None:
    # Large enough that the copy and the synthetic rows span several blocks, which 2 threads share out.
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0.0, 1.0, (12_000, 96)), rng.normal(0.5, 1.0, (60, 96))]).astype(np.float32)
    y = np.repeat([0, 1], [12_000, 60])
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sampler.set_params(random_state=3).fit_resample(X, y)
        torch.set_num_threads(2)
        two = sampler.set_params(random_state=3).fit_resample(X, y)
    finally:
        torch.set_num_threads(previous)
    assert one[0].shape[0] > 20_000  # the synthetic rows alone are several blocks of 2**18 values
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_finite_values_whose_sum_overflows_are_accepted() -> None:
    X, y = binary()
    X = (np.sign(X) * 3e38).astype(np.float32)  # finite, but a float32 sum of them overflows
    X[:, 0] = np.abs(X[:, 0])
    X_res, _ = RandomOverSampler(random_state=0).fit_resample(X, y)
    assert np.isfinite(X_res).all()


@pytest.mark.parametrize("sampler", ALL_SAMPLERS, ids=repr)
def test_global_random_states_are_untouched(sampler: object) -> None:
    X, y = three_classes()
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 - the legacy global state is the point
    torch_state = torch.get_rng_state().clone()
    sampler.set_params(random_state=None).fit_resample(X, y)
    sampler.set_params(random_state=3).fit_resample(X, y)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("sampler", ALL_SAMPLERS, ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_is_input_dtype(sampler: object, dtype: type) -> None:
    X, y = three_classes()
    X_res, y_res = sampler.set_params(random_state=0).fit_resample(X.astype(dtype), y.astype(np.int32))
    assert X_res.dtype == dtype and y_res.dtype == np.int32
    assert np.isfinite(X_res).all()
    assert sampler.device_ in {"cpu", "cuda"}


def test_integer_features_become_float64() -> None:
    X, y = three_classes()
    X_res, _ = SMOTE(random_state=0).fit_resample(np.rint(X * 10).astype(np.int64), y)
    assert X_res.dtype == np.float64


def test_fitted_attributes_of_a_plain_fit() -> None:
    X, y = three_classes()
    sampler = SMOTE(random_state=0).fit(X, y)
    assert sampler.sampling_strategy_ == {1: 95, 2: 80}
    sampler.fit_resample(X, y)
    assert sampler.n_synthetic_ == {1: 95, 2: 80}
    assert sampler.k_effective_ == {1: 5, 2: 5}
    assert (sampler.status_, sampler.reason_) == ("ok", "")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["random", "smote", "borderline", "adasyn"])
def test_cuda_counts_match_cpu(name: str) -> None:
    X, y = three_classes()
    _, y_cpu = SAMPLERS[name](device="cpu", random_state=0).fit_resample(X.astype(np.float32), y)
    X_gpu, y_gpu = SAMPLERS[name](device="cuda", random_state=0).fit_resample(X.astype(np.float32), y)
    assert Counter(y_gpu.tolist()) == Counter(y_cpu.tolist())
    assert X_gpu.dtype == np.float32


def test_samplers_registry() -> None:
    assert SAMPLERS == {
        "random": RandomOverSampler,
        "smote": SMOTE,
        "borderline": BorderlineSMOTE,
        "adasyn": ADASYN,
        "vae": VAEOverSampler,
    }


def test_works_inside_an_imblearn_pipeline() -> None:
    X, y = binary()
    model = make_pipeline(SMOTE(random_state=0), LogisticRegression()).fit(X, y)
    assert model.predict(X).shape == y.shape


# ----------------------------------------------------------------------------------------------
# explicit policies where imbalanced-learn fails or does nothing


@pytest.mark.parametrize("cls", [SMOTE, BorderlineSMOTE, ADASYN])
def test_small_class_is_clipped_and_recorded(cls: type) -> None:
    X, y = small_cluster(4)
    sampler = cls(random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    assert sampler.k_effective_ == {1: 3}
    assert sampler.status_ == "clipped_k"
    assert "class 1 has 4 samples" in sampler.reason_
    assert np.isfinite(X_res).all() and sampler.n_synthetic_[1] == np.sum(y_res == 1) - 4


@pytest.mark.parametrize("cls", [SMOTE, BorderlineSMOTE, ADASYN])
def test_small_class_raises_when_asked(cls: type) -> None:
    X, y = small_cluster(4)
    with pytest.raises(InfeasibleResampling, match="smaller than the minority class size") as info:
        cls(on_small_class="raise", random_state=0).fit_resample(X, y)
    assert info.value.status == "too_few_minority"
    assert "4 samples of class 1" in info.value.reason


@pytest.mark.parametrize("cls", [SMOTE, BorderlineSMOTE, ADASYN])
def test_single_minority_sample_cannot_be_interpolated(cls: type) -> None:
    X, y = binary(n_min=1)
    with pytest.raises(InfeasibleResampling, match="class 1 has 1 sample") as info:
        cls(random_state=0).fit_resample(X, y)
    assert info.value.status == "too_few_minority"


def test_borderline2_takes_neighbours_from_all_data_so_is_not_clipped() -> None:
    X, y = small_cluster(4)
    sampler = BorderlineSMOTE(kind="borderline-2", random_state=0)
    sampler.fit_resample(X, y)
    assert sampler.k_effective_ == {1: 5} and sampler.status_ == "ok"


def test_borderline_without_danger_raises_by_default_and_skips_when_asked() -> None:
    X, y = binary(shift=12.0)  # far apart: no minority sample has a majority neighbour
    with pytest.raises(InfeasibleResampling, match="no sample of class 1 in danger") as info:
        BorderlineSMOTE(random_state=0).fit_resample(X, y)
    assert info.value.status == "no_danger"
    sampler = BorderlineSMOTE(on_no_danger="skip", random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    np.testing.assert_array_equal(X_res, X)
    np.testing.assert_array_equal(y_res, y)
    assert sampler.status_ == "no_danger" and "class 1" in sampler.reason_
    assert sampler.n_synthetic_ == {1: 0}


def test_adasyn_without_majority_neighbour_raises_by_default_and_skips_when_asked() -> None:
    X, y = binary(shift=12.0)
    with pytest.raises(InfeasibleResampling, match="no neighbour of another class") as info:
        ADASYN(random_state=0).fit_resample(X, y)
    assert info.value.status == "no_majority_neighbour"
    sampler = ADASYN(on_no_majority_neighbour="skip", random_state=0)
    X_res, _ = sampler.fit_resample(X, y)
    np.testing.assert_array_equal(X_res, X)
    assert sampler.status_ == "no_majority_neighbour" and sampler.n_synthetic_ == {1: 0}


def test_skip_in_one_class_still_resamples_the_others() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (100, 2)), rng.normal(0.5, 1, (20, 2)), rng.normal(30, 1, (20, 2))])
    y = np.repeat([0, 1, 2], [100, 20, 20])
    sampler = BorderlineSMOTE(on_no_danger="skip", random_state=0)
    _, y_res = sampler.fit_resample(X, y)
    assert sampler.n_synthetic_[2] == 0 and sampler.n_synthetic_[1] == 80
    assert Counter(y_res.tolist()) == {0: 100, 1: 100, 2: 20}
    assert sampler.status_ == "no_danger" and "class 2" in sampler.reason_


def test_neighbours_beyond_the_data_size_are_infeasible() -> None:
    X, y = binary(n_maj=6, n_min=3, shift=0.3)
    with pytest.raises(InfeasibleResampling, match="m_neighbors=10 with 9 samples") as info:
        BorderlineSMOTE(random_state=0).fit_resample(X, y)
    assert info.value.status == "too_few_samples"


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_rejected(name: str, bad: float) -> None:
    X, y = binary()
    X[3, 1] = bad
    with pytest.raises(ValueError, match=r"Input X contains (NaN|infinity)"):
        SAMPLERS[name]().fit_resample(X, y)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_one_dimensional_X_is_rejected(name: str) -> None:
    X, y = binary()
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        SAMPLERS[name]().fit_resample(X[:, 0], y)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_labels_of_another_length_are_rejected(name: str) -> None:
    X, y = binary()
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[180, 179\]"):
        SAMPLERS[name]().fit_resample(X, y[:-1])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_dict_target_below_current_count_is_rejected(name: str) -> None:
    X, y = binary()
    with pytest.raises(ValueError, match="Originally, there is 30 samples and 10 samples are asked"):
        SAMPLERS[name](sampling_strategy={1: 10}).fit_resample(X, y)


def test_unknown_kind_is_rejected() -> None:
    X, y = binary()
    with pytest.raises(
        InvalidParameterError, match="'kind' parameter of BorderlineSMOTE must be a str among"
    ):
        BorderlineSMOTE(kind="borderline-3").fit_resample(X, y)


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (SMOTE, {"k_neighbors": 0}, "'k_neighbors' parameter of SMOTE must be an int in the range"),
        (SMOTE, {"on_small_class": "drop"}, "'on_small_class' parameter of SMOTE must be a str among"),
        (ADASYN, {"on_no_majority_neighbour": "x"}, "'on_no_majority_neighbour' parameter of ADASYN"),
        (RandomOverSampler, {"device": "tpu"}, "'device' parameter of RandomOverSampler must be a str among"),
        (VAEOverSampler, {"sample_from": "data"}, "'sample_from' parameter of VAEOverSampler must be"),
    ],
)
def test_bad_parameters_are_rejected(cls: type, params: dict, message: str) -> None:
    X, y = binary()
    with pytest.raises(InvalidParameterError, match=message):
        cls(**params).fit_resample(X, y)


def test_sparse_input_is_rejected() -> None:
    from scipy import sparse

    X, y = binary()
    with pytest.raises(TypeError, match="dense data is required"):
        SMOTE().fit_resample(sparse.csr_matrix(X), y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
def test_cuda_without_cuda_is_a_config_error() -> None:
    X, y = binary()
    with pytest.raises(ConfigError, match="got device='cuda' and torch sees no CUDA device"):
        SMOTE(device="cuda").fit_resample(X, y)


# ----------------------------------------------------------------------------------------------
# VAE


def test_vae_module_shapes_and_gradients() -> None:
    config = VAEConfig(n_features=12, latent_dim=3, hidden_dim=8)
    model = build_vae(config, torch.device("cpu"), torch.Generator().manual_seed(0))
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    recon, mu, logvar = model(x, generator=torch.Generator().manual_seed(2))
    assert recon.shape == (5, 12) and mu.shape == logvar.shape == (5, 3)
    loss = VAE.loss(x, recon, mu, logvar, beta=1.0)
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_vae_checkpoint_rebuilds_the_model() -> None:
    model = build_vae(
        VAEConfig(n_features=6, latent_dim=2, hidden_dim=4), torch.device("cpu"), torch.Generator()
    )
    checkpoint = vae_checkpoint(model)
    clone = VAE(VAEConfig(**checkpoint["config"]))
    clone.load_state_dict(checkpoint["state_dict"])
    z = torch.zeros(2, 2)
    assert torch.equal(clone.decoder(z), model.decoder(z))


@pytest.mark.parametrize("sample_from", ["prior", "posterior"])
def test_vae_samples_are_finite_and_near_the_minority_class(sample_from: str) -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(-3.0, 1.0, (200, 8)), rng.normal(3.0, 1.0, (40, 8))]).astype(np.float32)
    y = np.repeat([0, 1], [200, 40])
    sampler = VAEOverSampler(epochs=30, latent_dim=4, hidden_dim=32, sample_from=sample_from, random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    synthetic = synthetic_of(X, X_res, y_res, 1)
    assert synthetic.shape == (160, 8) and synthetic.dtype == np.float32
    assert np.isfinite(synthetic).all()
    to_minority = np.linalg.norm(synthetic - X[y == 1].mean(axis=0), axis=1)
    to_majority = np.linalg.norm(synthetic - X[y == 0].mean(axis=0), axis=1)
    assert (to_minority < to_majority).all()
    assert np.isfinite(sampler.train_loss_[1])


def test_vae_latent_size_changes_the_model() -> None:
    X, y = binary()
    small = VAEOverSampler(latent_dim=2, epochs=2, random_state=0)
    large = VAEOverSampler(latent_dim=6, epochs=2, random_state=0)
    X_small, _ = small.fit_resample(X, y)
    X_large, _ = large.fit_resample(X, y)
    assert small.models_[1].config.latent_dim == 2 and large.models_[1].config.latent_dim == 6
    assert small.models_[1].encoder.head.out_features == 4
    assert large.models_[1].decoder.hidden.in_features == 6
    assert not np.array_equal(X_small, X_large)


# ----------------------------------------------------------------------------------------------
# imbalanced-learn's estimator checks


def expected_failed_checks(estimator: object) -> dict[str, str]:
    return {
        "check_samplers_pandas_sparse": (
            "sparse input (scipy matrices or pandas sparse columns) is rejected on purpose: the "
            "samplers compute on dense torch tensors and embeddings are dense"
        ),
    }


_CHECKS = parametrize_with_checks(
    [
        RandomOverSampler(random_state=0),
        SMOTE(random_state=0),
        BorderlineSMOTE(random_state=0),
        BorderlineSMOTE(kind="borderline-2", random_state=0),
        ADASYN(random_state=0),
        VAEOverSampler(epochs=2, random_state=0),
    ],
    expected_failed_checks=expected_failed_checks,
)
# imbalanced-learn hands pytest a generator, which pytest deprecates; the same marks, as a list.
_CHECKS = pytest.mark.parametrize(_CHECKS.args[0], list(_CHECKS.args[1]), **_CHECKS.kwargs)


@_CHECKS
def test_imblearn_estimator_checks(estimator: object, check: object) -> None:
    check(estimator)
