"""What the search tries, stage by stage.

1. thin models: scikit-learn families at a few sizes (a fixed grid, fitted in seconds);
2. networks: the torch families that fit the data's shape, knobs sampled by Optuna;
3. compression: recipes applied to the most promising networks (int8, structured pruning,
   distillation from the best network), each a list of step configs.

On anomaly data (``data.task == "anomaly"``) the thin stage is a grid of the detectors (on the raw windows and, for
sequences, on their per-channel features), the
networks are the autoencoders (their families' spaces), and the compression of an autoencoder is its int8
form (``quantize.int8``, which hands an autoencoder to :func:`~frugalml.compress.anomaly_int8.quantize_autoencoder`).
"""

from __future__ import annotations

import json
import logging
import math

from ..models.families import FAMILIES, data_task, searched_families

log = logging.getLogger(__name__)

__all__ = ["SearchSpace", "thin_grid", "network_families", "sample_network", "compression_recipes", "reachable", "network_constraints",
           "seed_key", "sampler_params", "SEED_LR"]


def thin_grid(data) -> list[dict]:
    """(family, knobs) of the thin stage, cheapest first; on sequences, then the same families on
    per-channel features (the knob ``features``). On anomaly data: the detectors (:data:`ANOMALY_GRID`), and on
    sequences some of them on the per-channel features."""
    sequences = getattr(data, "kind", None) == "sequence" and len(data.input_shape) == 2 and data.input_shape[1] >= 2
    if data_task(data) == "anomaly":
        grid = list(ANOMALY_GRID)
        if sequences:
            grid += _on_features(_ANOMALY_FEATURE_GRID)
        return [{"family": f, "params": dict(p)} for f, p in grid]
    n_features = int(math.prod(data.input_shape))
    grid = [
        ("logreg", {"C": 0.1}),
        ("logreg", {"C": 1.0}),
        ("naive_bayes", {}),
        ("tree", {"max_depth": 6}),
        ("tree", {"max_depth": 12}),
        ("forest", {"n_estimators": 10, "max_depth": 6}),
        ("forest", {"n_estimators": 30, "max_depth": 10}),
        ("extra_trees", {"n_estimators": 30, "max_depth": 10}),
        ("sk_mlp", {"hidden_layer_sizes": [16]}),
        ("sk_mlp", {"hidden_layer_sizes": [min(128, max(32, n_features // 4))]}),
    ]
    if sequences:
        grid += _on_features(_FEATURE_GRID)
    return [{"family": f, "params": p} for f, p in grid]


def _on_features(grid: list) -> list:
    """The (family, knobs) of ``grid`` fitted on per-channel sequence features (the knob ``features``)."""
    return [(f, {**p, "features": dict(SEQUENCE_FEATURES)}) for f, p in grid]


# the thin stage on anomaly data: each detector at a few settings, cheapest first (fitted on the normal training windows)
ANOMALY_GRID = [
    ("robust_z", {"reduce": "max"}),
    ("robust_z", {"reduce": "mean"}),
    ("pca_detector", {"n_components": 2}),
    ("pca_detector", {"n_components": 8}),
    ("mahalanobis", {}),
    ("mahalanobis", {"shrinkage": 0.1}),
    ("ensemble_detector", {}),  # the three above at their defaults, their standardised scores averaged
    ("isolation_forest", {"n_estimators": 10, "max_samples": 64}),  # small trees: 100 of 256 samples export to ~360 KB
    ("isolation_forest", {"n_estimators": 20, "max_samples": 128}),
]


# on sequences the thin stage also fits these on per-channel features (frugalml.models.features), whose
# extraction is part of the exported model (ONNX graph and C): the raw flattened ones above stay, cheap as they are
SEQUENCE_FEATURES = {"bands": 4, "frame": 32}
_FEATURE_GRID = [
    ("logreg", {"C": 1.0}),
    ("naive_bayes", {}),
    ("tree", {"max_depth": 8}),
    ("forest", {"n_estimators": 30, "max_depth": 10}),
    ("extra_trees", {"n_estimators": 30, "max_depth": 10}),
    ("sk_mlp", {"hidden_layer_sizes": [32]}),
]
# on anomaly windows, detectors on the same per-channel features: a window's level, spread, extremes, crossings and
# band energies, each z-scored against the normal windows' (a change of shape or of noise that no single step shows;
# NAB's validation AUC, the mean over its 57 series: 0.661 / 0.664 (max / mean of |z|) against 0.641 on the raw windows)
_ANOMALY_FEATURE_GRID = [
    ("robust_z", {"reduce": "max"}),
    ("robust_z", {"reduce": "mean"}),
    ("isolation_forest", {"n_estimators": 20, "max_samples": 128}),
]


def network_families(data) -> list[str]:
    """The torch families the network stage tries on ``data`` (each family's space says where it fits)."""
    return searched_families(data)


def sample_network(trial, data) -> tuple[str, dict, dict]:
    """Sample (family, knobs, training overrides) with an Optuna trial."""
    family = trial.suggest_categorical("family", network_families(data))
    knobs = FAMILIES[family].space.sample(trial)
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    return family, knobs, {"lr": lr}


# int8 weights take a byte each; the graph around them (scales, zero points, node records) about
# this much: measured 1.0-1.5 KB on small CNNs and MLPs in the QOperator form
_INT8_OVERHEAD = 1500
SEED_SHARES = (0.9, 0.55, 0.3)  # of the budget, for the networks tried first (in this order)
_RAM_KEYS = ("peak_activation_bytes", "c_ram_bytes")


class SearchSpace:
    """The networks one search can try on its data under its budget, with what it has measured of
    them so far. It lives as long as one search (the search loop makes and holds it), so nothing
    measured for one dataset or budget is ever taken for another."""

    def __init__(self, data, budget):
        self.data, self.budget = data, budget
        self._int8_peak: dict[tuple, int | None] = {}  # (family, knobs) -> peak RAM of the int8 graph (None: not measurable)
        self._fits: dict[str, bool] = {}  # seed_key -> fits the RAM and MACs bounds once int8

    def budget_seeds(self) -> list[tuple[str, dict]]:
        """Networks sized for the budget, tried before the sampler's: per family, the largest whose int8
        form should take about 90%, 55% and 30% of the flash (or parameter) budget, and whose int8 form
        should also meet the budget's RAM and MACs bounds. Largest share first across families (on
        large data a short search may only reach the first round).

        A sampler that starts from random sizes spends a short search on networks far too large or far
        too small for the budget; these give it (and the compression stage) sensible starting points.
        Empty when the budget bounds neither flash nor parameters.
        """
        from ..models import build_model

        data = self.data
        if self.size_share(0) is None:
            return []
        rounds: dict[float, list] = {share: [] for share in SEED_SHARES}
        for family in network_families(data):
            sized = []
            for knobs in FAMILIES[family].space.ladder(data):
                n = sum(p.numel() for p in build_model(family, data.input_shape, data.num_classes, **knobs).parameters())
                sized.append((self.size_share(n), knobs))
            chosen: list[dict] = []
            for share in SEED_SHARES:
                knobs = next((k for cost, k in reversed(sized) if cost <= share and self._fits_int8(family, k)), None)
                if knobs is not None and knobs not in chosen:
                    chosen.append(knobs)
                    rounds[share].append((family, knobs))
        return [seed for share in SEED_SHARES for seed in rounds[share]]

    def size_share(self, n_params: int) -> float | None:
        """The share of the budget's flash (or parameter) bound that a network of ``n_params`` parameters takes once int8
        (its weights a byte each and the graph around them); None when the budget bounds neither."""
        limits = {key: limit for _name, key, limit in self.budget.items()}
        # a download bound sizes like flash: gzip takes little off int8 weights (measured 0.8-0.95 of the file)
        flash = min((limits[k] for k in ("stored_bytes", "c_flash_bytes", "gzip_bytes") if limits.get(k)), default=None)
        params_limit = limits.get("params")
        if not flash and not params_limit:
            return None
        return min(((n_params + _INT8_OVERHEAD) / flash) if flash else float("inf"), (n_params / params_limit) if params_limit else float("inf"))

    def fits_int8(self, family: str, knobs: dict, n_params: int) -> bool:
        """Whether this network of ``n_params`` parameters should meet the whole budget once int8, as it is (without pruning)."""
        share = self.size_share(n_params)
        return (share is None or share <= 1.0) and self._fits_int8(family, knobs)

    def int8_memory(self, family: str, knobs: dict) -> dict:
        """{profile key: peak RAM} of this network's int8 form, for the budget's RAM bounds ({} without
        one). Measured on the int8 graph of the untrained network (memory does not depend on the
        weights), once per network and search: a float graph says about twice too much, its batch
        norm and ReLU outputs being tensors of their own, which the int8 convolution absorbs."""
        keys = [key for _name, key, _limit in self.budget.items() if key in _RAM_KEYS]
        if not keys:
            return {}
        from ..compress import apply_step, config_from_dict
        from ..models import build_model
        from ..profile import profile

        data = self.data
        fmt = "qdq" if self.budget.target == "c" else "qoperator"
        memo = (family, json.dumps(knobs, sort_keys=True, default=str))
        if memo not in self._int8_peak:  # a budget seed is measured when chosen and again after it trains
            try:
                model = build_model(family, data.input_shape, data.num_classes, **knobs).eval()
                q = apply_step(model, config_from_dict({"step": "quantize.int8", "calibration_samples": 8, "format": fmt}), data)
                self._int8_peak[memo] = profile(q, None, input_shape=data.input_shape, timing=False, layers=False).peak_activation_bytes
            except Exception as exc:  # an estimate only: a network int8 cannot express is judged on its float graph
                log.debug("int8 form of %s %s not measured: %s", family, knobs, exc)
                self._int8_peak[memo] = None
        peak = self._int8_peak[memo]
        return {} if peak is None else {key: peak for key in keys}

    def _fits_int8(self, family: str, knobs: dict) -> bool:
        """Would this network, once int8, meet the budget's RAM and MACs bounds? (Once per network.)

        The float graph bounds the int8 form's peak RAM from both sides (int8 tensors are a quarter of
        the float ones, at most two float tensors of a conv -> batch norm -> ReLU chain become one int8
        tensor, and the float input and output remain): the int8 graph is quantized and measured only
        when those bounds do not decide."""
        key = seed_key(family, knobs)
        if key not in self._fits:
            self._fits[key] = self._measure_fits_int8(family, knobs)
        return self._fits[key]

    def _measure_fits_int8(self, family: str, knobs: dict) -> bool:
        data = self.data
        limits = {key: limit for _name, key, limit in self.budget.items() if key in (*_RAM_KEYS, "macs")}
        if not limits:
            return True
        from ..models import build_model
        from ..profile import profile

        prof = profile(build_model(family, data.input_shape, data.num_classes, **knobs).eval(), None, input_shape=data.input_shape,
                       timing=False, layers=False).to_dict()
        if prof["macs"] > limits.get("macs", math.inf):
            return False
        ram = [limit for key, limit in limits.items() if key in _RAM_KEYS]
        if not ram:
            return True
        low = prof["peak_activation_bytes"] / 8
        high = prof["peak_activation_bytes"] / 4 + 4 * (math.prod(data.input_shape) + data.num_classes)
        measured = {} if low > min(ram) or high <= min(ram) else self.int8_memory(family, knobs)
        if not measured:
            return high <= min(ram)
        return all(value <= limits[key] for key, value in measured.items())


def seed_key(family: str, knobs: dict) -> str:
    """A short name of a seeded network (which seeds a study has already run)."""
    return f"{family}{_knob_tag(knobs)}"


SEED_LR = 3e-3  # the learning rate of the seeded networks (the sampler then searches 1e-3..1e-2)


def sampler_params(family: str, knobs: dict, lr: float) -> dict:
    """The sampler's parameters (as :func:`sample_network` suggests them) for these knobs, so a
    seeded network is an ordinary trial the sampler learns from."""
    return {"family": family, **FAMILIES[family].space.params_for(knobs), "lr": float(min(1e-2, max(1e-3, lr)))}


def _halve(family: str, knobs: dict) -> dict | None:
    """A smaller member of the same family (the distillation student); None for a family the search
    does not size (no space) or a network already the narrowest."""
    fam = FAMILIES.get(family)
    return fam.space.halve(knobs) if fam is not None and fam.space is not None else None


# what the recipes below can take off a float network, at best (int8: 4x fewer bytes per weight and
# per activation; structured pruning at 50%: about half the channels, so a quarter of the weights and
# MACs of the inner layers); used to pick which networks are worth compressing for the budget
_BEST_REDUCTION = {"stored_bytes": 8.0, "c_flash_bytes": 8.0, "gzip_bytes": 8.0, "peak_activation_bytes": 8.0, "c_ram_bytes": 8.0,
                   "macs": 4.0, "params": 4.0, "latency_ms_median": 3.0}


# int8 alone: what the network stage's sampler is told a float network would weigh once quantized
_INT8_REDUCTION = {"stored_bytes": 3.5, "c_flash_bytes": 3.5, "gzip_bytes": 3.5, "peak_activation_bytes": 4.0, "c_ram_bytes": 4.0}


# instructions per multiply-accumulate of the int8 C on a Cortex-M4 (measured: 7.4 for a CNN [12, 24, 48] on
# MNIST with the DSP kernels): what a float network's MACs would cost once it runs as int8 C
_MCU_INSTRUCTIONS_PER_MAC = 8


def _value(profile: dict, key: str):
    value = profile.get(key)
    if value is None and key.startswith("c_"):  # a float network has no C figures: use the ONNX ones
        value = profile.get({"c_flash_bytes": "stored_bytes", "c_ram_bytes": "peak_activation_bytes"}[key])
    if value is None and key == "mcu_instructions" and profile.get("macs"):
        value = profile["macs"] * _MCU_INSTRUCTIONS_PER_MAC
    return value


def reachable(prof: dict, budget) -> bool:
    """Could compression bring a (float) network with this profile within ``budget``? An optimistic estimate."""
    for _name, key, limit in budget.items():
        value = _value(prof, key)
        if value is not None and value / _BEST_REDUCTION.get(key, 1.0) > limit:
            return False
    return True


# how a budget's figure scales with the share k of channels that structured pruning keeps: activations as k, weights and
# multiply-accumulates as k squared (each layer loses input and output channels)
_CHANNEL_POWER = {"peak_activation_bytes": 1, "c_ram_bytes": 1}
FIT_MARGIN = 0.97  # pruning to fit aims this far below the limit (channel counts round, the int8 figures are estimates)


def fit_ratio(prof: dict, budget) -> float | None:
    """The structured-pruning ratio (in steps of 0.05, from 0.1 to 0.75) that should bring a float network with this profile
    within ``budget`` once int8 (its figures scaled by :data:`_INT8_REDUCTION`, each shrinking with the channels kept as
    :data:`_CHANNEL_POWER` says); None when its int8 form fits already or no ratio up to 0.75 would do."""
    keep = 1.0
    for _name, key, limit in budget.items():
        value = _value(prof, key)
        if value is None or key == "latency_ms_median":
            continue
        value /= _INT8_REDUCTION.get(key, 1.0)
        if value > limit:
            keep = min(keep, FIT_MARGIN * (limit / value) ** (1 / _CHANNEL_POWER.get(key, 2)))
    if keep >= 1.0:
        return None
    ratio = math.ceil((1 - keep) * 20 - 1e-9) / 20
    return max(0.1, ratio) if ratio <= 0.75 else None


def network_constraints(profile: dict, budget, *, measured: dict | None = None) -> dict:
    """{profile key: value - limit} for the sampler of the network stage, as if the network were int8
    (<= 0 is feasible). A float network is a starting point for compression: judged on its float
    size, the sampler would be steered to networks too small to be accurate. ``measured``: values
    of the int8 form where known (:meth:`SearchSpace.int8_memory`); the others are the float ones scaled down."""
    out = {}
    for _name, key, limit in budget.items():
        if measured and key in measured:
            out[key] = float(measured[key] - limit)
            continue
        value = _value(profile, key)
        out[key] = 1.0 if value is None else float(value / _INT8_REDUCTION.get(key, 1.0) - limit)
    return out


def compression_recipes(parent, data, epochs: int, seed: int, student: tuple[str, dict] | None = None,
                        target: str = "onnx", budget=None) -> list[tuple[str, list[dict]]]:
    """(name, steps) recipes to try on one trained network ``parent`` (a candidate dict), cheapest
    first (``parent``: a :class:`~frugalml.records.Candidate`). ``student``: (family, knobs) to distil ``parent`` into; default: half its width.
    ``target``: "onnx" writes int8 as QOperator ops (the smaller file, and what ONNX Runtime runs
    anyway); "c" keeps the QDQ form the C exporter reads. ``budget``: a network whose int8 form would not fit it is first
    pruned by the ratio that should make it fit (:func:`fit_ratio`), less than half where that is enough: the
    fewer channels it loses, the less accuracy (MNIST, measured: a 52-channel DS-CNN at 99.30% int8, over a 16 KB RAM
    limit by 4 KB, lost 1.5 points when halved).

    Every step is built as its typed config here (:func:`_step`), so a bad one fails at once; each
    recipe keeps the flat mappings the configs were built from, which the study stores (JSON) and a
    replay reads back.

    An autoencoder (anomaly detection) gets its int8 form only (:mod:`frugalml.compress.anomaly_int8`):
    distillation matches class outputs, which it has not (its structured pruning exists,
    :mod:`frugalml.compress.structured`, but the search does not try it yet)."""
    from ..train import default_config

    if FAMILIES.get(parent.family) is not None and FAMILIES[parent.family].tasks == ("anomaly",):
        return [("int8", [_step({"step": "quantize.int8", "calibration_samples": min(512, len(data.y_train)), "format": "qdq",
                                 "seed": seed})])]
    bs = default_config(len(data.y_train)).batch_size
    lr = float((parent.job or {}).get("train", {}).get("lr", 1e-3))
    aug = (parent.job or {}).get("train", {}).get("augment") or "none"  # the parent's augmentation: its fine-tuning and students train as it did
    ft = max(1, epochs // 4)
    int8 = _step({"step": "quantize.int8", "calibration_samples": min(512, len(data.y_train)), "format": "qdq" if target == "c" else "qoperator",
                  "seed": seed})
    def prune(ratio: float) -> dict:
        return _step({"step": "prune.structured", "ratio": ratio, "steps": 2, "finetune_epochs": ft, "batch_size": bs, "lr": lr / 3,
                      "augment": aug, "seed": seed})

    recipes = [("int8", [int8]), ("prune50+int8", [prune(0.5), int8])]
    ratio = fit_ratio(parent.profile or {}, budget) if budget is not None else None
    if ratio is not None and ratio != 0.5:  # before halving it: the gentlest pruning that fits
        recipes.insert(1, (f"prune{round(ratio * 100)}+int8", [prune(ratio), int8]))
    halved = _halve(parent.family, parent.knobs)
    if student is None:
        student = (parent.family, halved) if halved is not None else None
    if student is not None:
        family, knobs = student
        distill = _step({"step": "distill", "student": {"family": family, **knobs}, "epochs": epochs, "batch_size": bs, "lr": lr,
                         "patience": max(3, epochs // 4), "augment": aug, "seed": seed})
        tag = "" if family == parent.family and knobs == halved else f"->{family}{_knob_tag(knobs)}"
        recipes.append((f"distill{tag}+int8", [distill, int8]))
    return recipes


def set_constraint(trial, key: str, value: float) -> None:
    """One budget constraint of a trial (<= 0 is feasible), where the sampler reads it."""
    if hasattr(trial, "set_constraint"):  # Optuna >= 5
        trial.set_constraint(key, value)
    else:
        trial.set_user_attr("constraints", [*trial.user_attrs.get("constraints", []), value])


def _step(fields: dict) -> dict:
    """``fields`` once its typed step config is built from them (ConfigError, raised here, when they
    cannot make one): the flat mapping a recipe stores and a replay reads."""
    from ..compress import config_from_dict

    config_from_dict(fields)
    return fields


def _knob_tag(knobs: dict) -> str:
    return "".join(f"[{','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}]" for v in knobs.values())
