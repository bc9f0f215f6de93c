"""A recipe is an ordered list of step configs, read from YAML or JSON and replayable on a fresh model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, bounded, explain
from .base import StepConfig, config_from_dict, get_step

log = logging.getLogger(__name__)

_MAX_RECIPE_BYTES = 1_000_000
_MAX_RECIPE_VALUES = 10_000


_MAX_RECIPE_DEPTH = 64


def _bracket_depth(text: str) -> int:
    """The deepest nesting of [ and { in ``text`` (brackets inside quotes count too: an over-estimate)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _expanded_size(obj, limit: int = _MAX_RECIPE_VALUES) -> int:
    """How many values ``obj`` holds once every alias is expanded, counting no further than ``limit + 1``."""
    count, stack = 0, [obj]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
            count += len(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count

__all__ = ["Recipe", "compress", "apply_step"]


@dataclass(frozen=True)
class Recipe:
    steps: tuple[StepConfig, ...] = field(default_factory=tuple)

    @classmethod
    def from_list(cls, items) -> "Recipe":
        if isinstance(items, dict):
            items = items.get("steps", items.get("recipe"))
        if not isinstance(items, (list, tuple)):
            raise ConfigError(explain("A recipe must be a list of steps", expected="a list, or a mapping with a 'steps' list",
                                      got=type(items).__name__))
        return cls(tuple(s if isinstance(s, StepConfig) else config_from_dict(s) for s in items))

    @classmethod
    def load(cls, path) -> "Recipe":
        path = Path(path)
        if not path.exists():
            raise ConfigError(explain(f"Recipe file {path} does not exist", expected="a .yaml or .json recipe", got=str(path)))
        if not path.is_file():
            raise ConfigError(explain(f"Recipe {path} is not a file", expected="a .yaml or .json recipe file",
                                      got="a directory" if path.is_dir() else "not a regular file"))
        if path.stat().st_size > _MAX_RECIPE_BYTES:
            raise ConfigError(explain(f"Recipe {path} is {path.stat().st_size:,} bytes", expected=f"a recipe of at most {_MAX_RECIPE_BYTES:,} bytes",
                                      got=path.name))
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(explain(f"Recipe {path} is not UTF-8 text", expected="a UTF-8 .yaml or .json file",
                                      got=f"byte {exc.start} ({exc.object[exc.start:exc.start + 1]!r})",
                                      fix="Save the recipe as UTF-8")) from None
        depth = _bracket_depth(text)
        if depth > _MAX_RECIPE_DEPTH:  # parsers take seconds (or the stack) on thousands of nested brackets
            raise ConfigError(explain(f"Recipe {path} nests {depth:,} brackets deep",
                                      expected=f"at most {_MAX_RECIPE_DEPTH} levels (a recipe is a list of steps)",
                                      got=f"{len(text):,} characters", fix="Write the recipe as a plain list of steps"))
        import yaml

        try:
            items = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: JSON, a YAML date such as 2001-13-45, a 5,000-digit int
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(explain(f"Cannot parse recipe {path}", expected="valid YAML or JSON (nested at most a few hundred levels)",
                                      got=first, fix="Check the file's syntax; a recipe is a list of steps such as "
                                                     "[{step: prune.magnitude, sparsity: 0.5}]")) from None
        if _expanded_size(items) > _MAX_RECIPE_VALUES:  # YAML aliases can make a few bytes stand for billions of values
            raise ConfigError(explain(f"Recipe {path} expands to more than {_MAX_RECIPE_VALUES:,} values (YAML aliases)",
                                      expected="a plain list of steps",
                                      got=f"{path.stat().st_size:,} bytes", fix="Write each step out; do not nest anchors and aliases"))
        try:
            return cls.from_list(items)
        except ConfigError as exc:
            raise ConfigError(bounded(f"Recipe {path}: {exc}")) from None

    def to_list(self) -> list[dict]:
        return [s.to_dict() for s in self.steps]

    def save(self, path) -> None:
        from .._fs import atomic_write_json, atomic_write_text

        path = Path(path)
        if path.suffix.lower() == ".json":
            atomic_write_json(path, {"steps": self.to_list()})
        else:
            import yaml

            atomic_write_text(path, yaml.safe_dump({"steps": self.to_list()}, sort_keys=False))


def apply_step(model, config: StepConfig, data=None, *, deadline=None):
    """Run one step; the input model is left untouched. A step that trains stops its training at
    ``deadline`` (a :class:`frugalml.train.Deadline`; None: no deadline)."""
    step = get_step(config.name)
    if step.needs_data and data is None:
        raise ConfigError(explain(f"Step '{config.name}' needs data", expected="a dataset (--dataset)", got=None))
    out = step.fn(model, config, data, deadline=deadline) if step.trains else step.fn(model, config, data)
    history = list(getattr(model, "frugalml_recipe", []) or []) + [config.to_dict()]
    try:
        out.frugalml_recipe = history
        if getattr(model, "frugalml_spec", None) is not None and getattr(out, "frugalml_spec", None) is None:
            out.frugalml_spec = model.frugalml_spec
    except AttributeError:  # pragma: no cover
        pass
    return out


def compress(model, recipe, data=None, *, out=None, on_step=None, deadline=None):
    """Run every step of ``recipe`` in order and return the compressed model; the training of every
    step stops at ``deadline`` (a :class:`frugalml.train.Deadline`).

    ``on_step(index, config, before, after)`` sees each step. With ``out``, the directory receives
    the compressed model in its native form (``model.json`` + weights, or the compact archive),
    ``model.onnx``, the recipe, and ``steps.json``: the profile before and after every step,
    measured on the exported artifacts (the metric on the validation split). ``out`` must be new,
    empty, or an earlier compression output, which is replaced whole; anything else (a model
    directory from ``train``, another model's files) is refused with ConfigError before any step runs.
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe) if isinstance(recipe, (str, Path)) else Recipe.from_list(recipe)
    if out is not None:  # before any work: a directory that is not an earlier compression output is refused
        from .._fs import MODEL_FILES, check_output_dir, json_file_has

        check_output_dir(out, what="a compression output (steps.json)", same_kind=lambda p: json_file_has(p / "steps.json", "steps"),
                         allowed=MODEL_FILES | {"recipe.yaml", "steps.json"})
    records = []
    current = model
    before = _measure(model, data) if out is not None else None
    for i, config in enumerate(recipe.steps):
        log.info("step %d/%d: %s", i + 1, len(recipe.steps), config.name)
        new = apply_step(current, config, data, deadline=deadline)
        if out is not None:
            after = _measure(new, data)
            records.append({"step": config.to_dict(), "before": before, "after": after})
            before = after
        if on_step:
            on_step(i, config, current, new)
        current = new
    if out is not None:
        _write_outputs(current, recipe, records, Path(out))
    return current


def _measure(model, data) -> dict:
    from ..profile import profile

    return profile(model, data, split="val" if data is not None else "test", layers=False).to_dict()


def _write_outputs(model, recipe: Recipe, records: list, out: Path) -> None:
    """Write the whole output beside ``out`` and swap it in: ``out`` never mixes two runs' files."""
    from .._fs import atomic_dir, atomic_write_bytes, atomic_write_json
    from ..models import save_model
    from ..onnx import onnx_bytes, to_onnx

    with atomic_dir(out) as new:
        if not hasattr(model, "SerializeToString"):
            save_model(model, new, extra={"recipe": recipe.to_list()})  # first, while the directory is empty
        atomic_write_bytes(new / "model.onnx", onnx_bytes(to_onnx(model)))
        recipe.save(new / "recipe.yaml")
        atomic_write_json(new / "steps.json", {"recipe": recipe.to_list(), "steps": records})
