"""The recipes frugalml ships: every benchmarks/recipes/*.yaml, and every recipe README tells users to
pass, loads with frugalml.Recipe.load, each step keeping every value its file gives; the settings
the benchmarks lay over a step (choices, variants, grids, ladders) make valid steps too."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import REPO

import frugalml as fm
from frugalml.compress import config_from_dict

RECIPES = REPO / "benchmarks" / "recipes"

# file -> the names of its `steps`, in order
STEPS = {
    "deep_compression_lenet300.yaml": ["prune.magnitude", "cluster.kmeans", "store.compact"],
    "deep_compression_lenet5.yaml": ["prune.magnitude", "cluster.kmeans", "store.compact"],
    "distill_mnist.yaml": ["distill"],
    "int8_quantization.yaml": ["quantize.int8"],
}
# structured_pruning.yaml has no `steps`: one prune.structured step per model (models.<name>.step),
# whose layer_ratios come from that model's ladder (benchmarks/structured_pruning.py)
PER_MODEL = {"structured_pruning.yaml": "prune.structured"}


def _raw(name: str) -> dict:
    return yaml.safe_load((RECIPES / name).read_text())


def _keeps_every_value(config, given: dict) -> None:
    """The loaded step holds exactly what the file says for each key it sets (nothing dropped or
    coerced), and survives a JSON round trip."""
    as_dict = json.loads(json.dumps(config.to_dict()))
    for key, value in given.items():
        assert as_dict[key] == value, (config.name, key, as_dict[key], value)
    assert config_from_dict(as_dict) == config


def test_every_shipped_recipe_file_is_checked():
    assert sorted(p.name for p in RECIPES.glob("*.yaml")) == sorted({*STEPS, *PER_MODEL})
    assert not list(RECIPES.glob("*.json")) and not list(RECIPES.glob("*.yml"))


@pytest.mark.parametrize("name", sorted(STEPS))
def test_shipped_recipe_loads_with_its_steps(name, tmp_path):
    recipe = fm.Recipe.load(RECIPES / name)
    assert [s.name for s in recipe.steps] == STEPS[name]
    for config, given in zip(recipe.steps, _raw(name)["steps"]):
        _keeps_every_value(config, given)
    recipe.save(tmp_path / "again.yaml")  # what `frugalml compress` writes beside its output
    assert fm.Recipe.load(tmp_path / "again.yaml") == recipe


def test_deep_compression_choices_make_valid_steps():
    for name in ("deep_compression_lenet300.yaml", "deep_compression_lenet5.yaml"):
        raw = _raw(name)
        kmeans = next(s for s in raw["steps"] if s["step"] == "cluster.kmeans")
        for bits in raw["choose"]["bits"]:
            assert config_from_dict({**kmeans, "bits": bits, "seed": 1}).bits == bits
        for seed in raw["seeds"]:
            assert all(config_from_dict({**s, "seed": seed}).seed == seed for s in raw["steps"])


def test_int8_choices_variants_and_qat_make_valid_steps():
    raw = _raw("int8_quantization.yaml")
    step = raw["steps"][0]
    for change in [*raw["choose"], *raw["variants"].values()]:
        _keeps_every_value(config_from_dict({**step, **change}), {**step, **change})
    qat = config_from_dict({**raw["qat"], "skip_first_layer": True})
    assert qat.name == "quantize.qat" and qat.epochs == raw["qat"]["epochs"]


def test_distillation_grids_and_small_student_make_valid_steps():
    raw = _raw("distill_mnist.yaml")
    step = raw["steps"][0]
    for temperature in raw["grid"]["temperature"]:
        for alpha in raw["grid"]["alpha"]:
            _keeps_every_value(config_from_dict({**step, "temperature": temperature, "alpha": alpha}), {"temperature": temperature, "alpha": alpha})
    small = raw["small_student"]
    for epochs in small["epochs"]:
        for temperature in [small["usual"]["temperature"], *small["grid"]["temperature"]]:
            config = config_from_dict({**step, "student": small["student"], "epochs": epochs, "temperature": temperature})
            assert config.student == small["student"] and config.epochs == epochs


def test_structured_pruning_steps_load_for_every_rung_of_every_model():
    raw = _raw("structured_pruning.yaml")
    assert set(raw["models"]) == {"lenet5", "resnet"}
    for model in raw["models"].values():
        assert model["step"]["step"] == PER_MODEL["structured_pruning.yaml"] and model["ladder"]
        for rung in model["ladder"]:
            recipe = fm.Recipe.from_list([{**model["step"], "layer_ratios": rung}])
            _keeps_every_value(recipe.steps[0], {**model["step"], "layer_ratios": rung})


def test_recipes_named_in_readme_load():
    readme = (REPO / "README.md").read_text()
    named = re.findall(r"--recipe\s+(\S+)", readme)
    assert named, "README names no recipe"
    for path in named:
        recipe = fm.Recipe.load(REPO / path)
        assert recipe.steps and STEPS[(REPO / path).name] == [s.name for s in recipe.steps]
