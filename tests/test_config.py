import ast
import dataclasses
import inspect
import json

import pytest

from a3c_core import config as config_module
from a3c_core.config import (
    RUN_CONTROL,
    SEED_PRESET,
    A3CConfig,
    ConfigError,
    field_docs,
)


def test_every_field_has_a_docstring():
    docs = field_docs()
    for f in dataclasses.fields(A3CConfig):
        assert len(docs.get(f.name, "")) > 10, f"{f.name} has no docstring"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        A3CConfig().lr = 1.0


@pytest.mark.parametrize(
    "change",
    [
        {"num_workers": 0},
        {"envs_per_worker": 0},
        {"lr": 0.0},
        {"lr": -1e-4},
        {"gamma": 1.5},
        {"gae_lambda": -0.1},
        {"rollout_len": 0},
        {"learn_groups": 0},
        {"learn_groups": 3},  # does not divide the 8 games of a worker
        {"learn_groups": 16},
        {"max_grad_norm": 0.0},
        {"total_steps": 0},
        {"lr_plateau_factor": 1.0},
        {"lr_plateau_factor": 0.0},
        {"lr_plateau_window": 0},
        {"lr_plateau_patience": 0},
        {"entropy_plateau_factor": -0.5},
        {"entropy_plateau_factor": 2.0},
    ],
)
def test_nonsense_hyperparameters_are_rejected_with_one_line(change):
    with pytest.raises(ConfigError) as error:
        A3CConfig(**change)
    message = str(error.value)
    assert "\n" not in message and next(iter(change)) in message


def test_json_round_trip_and_unknown_keys():
    cfg = A3CConfig(env_id="Breakout-v4", lr=3e-4)
    assert A3CConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError, match="unknown config keys"):
        A3CConfig.from_dict({"learning_rate": 1e-3})


def test_seed_preset_keeps_baby_a3c_values():
    assert (SEED_PRESET.num_workers, SEED_PRESET.envs_per_worker) == (20, 1)
    assert SEED_PRESET.lr == 1e-4 and SEED_PRESET.rollout_len == 20
    assert (SEED_PRESET.gamma, SEED_PRESET.gae_lambda) == (0.99, 1.0)
    assert (SEED_PRESET.entropy_coef, SEED_PRESET.max_grad_norm) == (0.01, 40.0)
    assert SEED_PRESET.value_coef * 0.5 == 0.25  # seed: 0.5 * (0.5 * sum of squares)
    assert (SEED_PRESET.conv_dtype, SEED_PRESET.lr_decay_steps) == ("float32", 0)
    assert SEED_PRESET.lr_plateau_cuts == 0  # a constant learning rate


def test_seed_preset_names_every_field_that_changes_learning():
    """A default changed later (a new learning rate, bfloat16) must not change the
    seed preset: it gives every field itself, except the game and run control."""
    tree = ast.parse(inspect.getsource(config_module))
    call = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "SEED_PRESET"
    )
    named = {kw.arg for kw in call.keywords}
    fields = {f.name for f in dataclasses.fields(A3CConfig)}
    exempt = (RUN_CONTROL | {"env_id", "sync_every"}) - {"total_steps"}
    assert fields - exempt <= named, sorted(fields - exempt - named)


def test_run_control_is_a_subset_of_the_fields_without_learning_ones():
    names = {f.name for f in dataclasses.fields(A3CConfig)}
    assert RUN_CONTROL < names
    assert {"lr", "entropy_coef", "envs_per_worker"}.isdisjoint(RUN_CONTROL)


def bad_values(f: dataclasses.Field) -> list:
    """Values no field of f's type may take: wrong types, NaN and infinities."""
    if f.type in (int, "int"):
        return [-1, 2**64, 1.5, True, "3", None]
    if f.type in (float, "float"):
        return [float("nan"), float("inf"), float("-inf"), -1e300, True, "0.1", None]
    return ["", 3, None]


@pytest.mark.parametrize("field", dataclasses.fields(A3CConfig), ids=lambda f: f.name)
def test_every_field_refuses_wrong_types_non_finite_and_out_of_range_values(field):
    for value in bad_values(field):
        with pytest.raises(ConfigError) as error:
            A3CConfig(**{field.name: value})
        message = str(error.value)
        assert "\n" not in message and field.name in message, (value, message)


def test_seeds_stay_in_numpys_range_and_huge_step_counts_are_refused():
    A3CConfig(seed=0), A3CConfig(seed=2**31 - 1)
    for change in ({"seed": -1}, {"seed": 2**32}, {"total_steps": 10**23}):
        with pytest.raises(ConfigError, match=next(iter(change))):
            A3CConfig(**change)
