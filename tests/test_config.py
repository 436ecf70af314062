from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from embalance.errors import ConfigError
from embalance.experiment.methods import METHODS
from embalance.params import apply_overrides, load_params, validate
from embalance.runtime import derive_seed

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_are_valid(base_params: dict) -> None:
    validate(base_params)


def test_unknown_method_lists_the_known_ones(base_params: dict) -> None:
    p = copy.deepcopy(base_params)
    p["augment"]["methods"] = ["none", "smoot"]
    with pytest.raises(ConfigError, match=r"Unknown method 'smoot'.*known methods: " + ", ".join(METHODS)):
        validate(p)


@pytest.mark.parametrize("size", [3, 0, 1, 6, "8", 2.0])
def test_sizes_must_be_powers_of_two(base_params: dict, size: object) -> None:
    p = copy.deepcopy(base_params)
    p["imbalance"]["sizes"] = [4, size]
    with pytest.raises(ConfigError, match=r"`imbalance.sizes\[1\]` must be a power of two >= 2.*but got"):
        validate(p)


def test_overrides_parse_yaml_values_and_reject_unknown_keys(base_params: dict) -> None:
    p = apply_overrides(base_params, ["cv.n_folds=5", "imbalance.sizes=[8, 16]", "train.lr=1e-7", "tracking.experiment=1e5x"])
    assert p["cv"]["n_folds"] == 5 and p["imbalance"]["sizes"] == [8, 16] and p["train"]["lr"] == 1e-7
    assert p["tracking"]["experiment"] == "1e5x"
    assert base_params["cv"]["n_folds"] == 10  # the original is untouched
    with pytest.raises(ConfigError, match=r"^Unknown key `cv.nfolds` in --set cv.nfolds=5; did you mean `cv.n_folds`\? \(keys of `cv`: n_folds\)\.$"):
        apply_overrides(base_params, ["cv.nfolds=5"])
    with pytest.raises(ConfigError, match=r"must look like `section.key=value`"):
        apply_overrides(base_params, ["cv.n_folds"])


def test_load_params_validates_overrides(tmp_path, base_params: dict) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base_params))
    with pytest.raises(ConfigError, match=r"`cv.n_folds` must be an integer >= 2, but got 1"):
        load_params(path, ["cv.n_folds=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")


def test_load_params_returns_the_file_unchanged() -> None:
    # The real params.yaml validates, and the stages get exactly its keys and values: no default filled in, no type changed.
    loaded = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert loaded == raw
    assert json.dumps(loaded, sort_keys=True) == json.dumps(raw, sort_keys=True)  # 1.0 stays 1.0, 1 stays 1 (== alone would not tell)


def _with(base: dict, change) -> dict:
    p = copy.deepcopy(base)
    change(p)
    return p


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(seeds=1), r"^Unknown key `seeds` in params.yaml; did you mean `seed`\? \(keys of params.yaml: seed, data, "),
        (lambda p: p["augment"].update(k_neighbours=5), r"^Unknown key `augment.k_neighbours` in params.yaml; did you mean `augment.k_neighbors`\? \(keys of `augment`: methods, "),
        (lambda p: p["augment"]["vae"].update(latentdim=8), r"^Unknown key `augment.vae.latentdim` in params.yaml; did you mean `augment.vae.latent_dim`\? \(keys of `augment.vae`: "),
        (lambda p: p["data"]["hub"]["imdb"].update(pth="x"), r"^Unknown key `data.hub.imdb.pth` in params.yaml; did you mean `data.hub.imdb.path`\? "),
    ],
    ids=["top", "section", "nested", "map-entry"],
)
def test_unknown_keys_are_named_with_the_closest_one(base_params: dict, change, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(_with(base_params, change))


def test_unknown_key_via_set_fails_before_any_work(tmp_path, base_params: dict) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base_params))
    with pytest.raises(ConfigError, match=r"^Unknown key `augment.vae.latentdim` in --set augment.vae.latentdim=8; did you mean `augment.vae.latent_dim`\?"):
        load_params(path, ["augment.vae.latentdim=8"])
    with pytest.raises(ConfigError, match=r"^--set train.lr.x=1: `train.lr` is a value, not a section"):
        load_params(path, ["train.lr.x=1"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cv.n_folds", True, r"^`cv.n_folds` must be an integer >= 2, but got True\.$"),
        ("train.lr", False, r"^`train.lr` must be a number > 0, but got False\.$"),
        ("train.early_stopping", 1, r"^`train.early_stopping` must be true or false, but got 1\.$"),
        ("embed.device", "gpu", r"^`embed.device` must be one of auto, cpu, cuda, but got 'gpu'\.$"),
        ("imbalance.majority_cap", 0, r"^`imbalance.majority_cap` must be an integer > 0, or null, but got 0\.$"),
    ],
)
def test_wrong_types_are_refused(base_params: dict, key: str, value: object, message: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=message):
        validate(_with(base_params, lambda p: p[section].update({name: value})))


def test_malformed_set_value_is_one_line(base_params: dict) -> None:
    with pytest.raises(ConfigError) as e:
        apply_overrides(base_params, ["augment.methods=[none,"])
    assert str(e.value) == "Override 'augment.methods=[none,': the value '[none,' is not valid YAML: expected the node content, but found '<stream end>' (line 1, column 7)."


def test_set_adds_a_key_to_a_map_but_not_to_a_section(tmp_path, base_params: dict) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base_params))
    p = load_params(path, ["data.class_names.newset=[a, b]", "data.hub.newset={path: me/newset, train: train, test: test}"])
    assert p["data"]["class_names"]["newset"] == ["a", "b"] and p["data"]["hub"]["newset"]["path"] == "me/newset"
    with pytest.raises(ConfigError, match=r"^`data.class_names.newset\[1\]` must be a string, but got 2\.$"):
        load_params(path, ["data.class_names.newset=[a, 2]"])
    with pytest.raises(ConfigError, match=r"^params.yaml needs `data.hub.newset.test` "):
        load_params(path, ["data.hub.newset={path: me/newset, train: train}"])


def test_derive_seed_is_stable_and_distinct() -> None:
    assert derive_seed(42, "sst2", 8, 0) == derive_seed(42, "sst2", 8, 0)
    assert len({derive_seed(42, "sst2", 8, k) for k in range(10)}) == 10
    # Known value: independent of the Python process and PYTHONHASHSEED.
    assert derive_seed(42, "x") == derive_seed(42, "x") and 0 <= derive_seed(42, "x") < 2**32


@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, "x", "2", True, None])
def test_draws_must_be_an_integer_of_at_least_one(base_params: dict, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^`imbalance.draws` must be an integer >= 1, but got {re.escape(repr(value))}\.$"):
        validate(_with(base_params, lambda p: p["imbalance"].update(draws=value)))


def test_draws_defaults_to_one_and_is_checked_on_set(tmp_path, base_params: dict) -> None:
    assert base_params["imbalance"]["draws"] == 1  # params.yaml names it
    p = copy.deepcopy(base_params)
    del p["imbalance"]["draws"]
    assert validate(p).imbalance.draws == 1  # an older params file without the key: one draw, as before
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(base_params))
    assert load_params(path, ["imbalance.draws=3"])["imbalance"]["draws"] == 3
    with pytest.raises(ConfigError, match=r"^`imbalance.draws` must be an integer >= 1, but got 0\.$"):
        load_params(path, ["imbalance.draws=0"])
