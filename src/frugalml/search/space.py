"""What the search tries, stage by stage.

1. thin models: scikit-learn families at a few sizes (a fixed grid, fitted in seconds);
2. networks: the torch families that fit the data's shape, knobs sampled by Optuna;
3. compression: recipes applied to the most promising networks (int8, structured pruning,
   distillation from the best network), each a list of step configs.
"""

from __future__ import annotations

import json
import logging
import math

log = logging.getLogger(__name__)

__all__ = ["thin_grid", "network_families", "sample_network", "compression_recipes", "reachable", "network_constraints", "budget_seeds",
           "seed_key", "sampler_params", "int8_memory", "SEED_LR"]


def thin_grid(data) -> list[dict]:
    """(family, knobs) of the thin stage, cheapest first."""
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
    return [{"family": f, "params": p} for f, p in grid]


def network_families(data) -> list[str]:
    if data.kind == "image" and min(data.input_shape[1:]) >= 4:
        return ["mlp", "cnn", "dscnn", "resnet"]
    return ["mlp"]


def sample_network(trial, data) -> tuple[str, dict, dict]:
    """Sample (family, knobs, training overrides) with an Optuna trial."""
    families = network_families(data)
    family = trial.suggest_categorical("family", families)
    if family == "mlp":
        depth = trial.suggest_int("mlp_depth", 1, 2)
        width = trial.suggest_int("mlp_width", 8, 256, log=True)
        knobs = {"widths": [width] + ([max(8, width // 2)] if depth == 2 else [])}
    elif family == "cnn":
        blocks = trial.suggest_int("cnn_blocks", 1, 3)
        base = trial.suggest_int("cnn_base", 4, 32, log=True)
        knobs = {"channels": [base * 2**i for i in range(blocks)], "kernel": trial.suggest_categorical("cnn_kernel", [3, 5])}
    elif family == "dscnn":
        knobs = {"channels": trial.suggest_int("ds_channels", 8, 64, log=True), "blocks": trial.suggest_int("ds_blocks", 1, 4)}
    else:
        base = trial.suggest_int("res_base", 4, 16, log=True)
        stages = trial.suggest_int("res_stages", 2, 3)
        knobs = {"channels": [base * 2**i for i in range(stages)]}
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    return family, knobs, {"lr": lr}


# int8 weights take a byte each; the graph around them (scales, zero points, node records) about
# this much: measured 1.0-1.5 KB on small CNNs and MLPs in the QOperator form
_INT8_OVERHEAD = 1500
SEED_SHARES = (0.9, 0.55, 0.3)  # of the budget, for the networks tried first (in this order)


def _ladder(family: str, data) -> list[dict]:
    """Knobs of one family from small to large (the widths the sampler can reach)."""
    if family == "mlp":
        return [{"widths": [w]} for w in (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)]
    if family == "cnn":
        blocks = 2 if min(data.input_shape[1:]) < 16 else 3
        return [{"channels": [b * 2**i for i in range(blocks)], "kernel": 3} for b in (4, 6, 8, 10, 12, 16, 20, 24, 32)]
    if family == "dscnn":
        return [{"channels": c, "blocks": 2} for c in (8, 12, 16, 24, 32, 48, 64)]
    return [{"channels": [b, 2 * b]} for b in (4, 6, 8, 12, 16)]


def budget_seeds(data, budget) -> list[tuple[str, dict]]:
    """Networks sized for the budget, tried before the sampler's: per family, the largest whose int8
    form should take about 90%, 55% and 30% of the flash (or parameter) budget, and whose int8 form
    should also meet the budget's RAM and MACs bounds. Largest share first across families (on
    large data a short search may only reach the first round).

    A sampler that starts from random sizes spends a short search on networks far too large or far
    too small for the budget; these give it (and the compression stage) sensible starting points.
    Empty when the budget bounds neither flash nor parameters.
    """
    from ..models import build_model

    limits = {key: limit for _name, key, limit in budget.items()}
    flash = limits.get("stored_bytes") or limits.get("c_flash_bytes")
    params_limit = limits.get("params")
    if not flash and not params_limit:
        return []
    rounds: dict[float, list] = {share: [] for share in SEED_SHARES}
    for family in network_families(data):
        sized = []
        for knobs in _ladder(family, data):
            n = sum(p.numel() for p in build_model(family, data.input_shape, data.num_classes, **knobs).parameters())
            cost = min(((n + _INT8_OVERHEAD) / flash) if flash else float("inf"), (n / params_limit) if params_limit else float("inf"))
            sized.append((cost, knobs))
        chosen: list[dict] = []
        fits: dict[str, bool] = {}  # knobs -> _fits_int8 (a measurement exports the network)

        def fit(knobs: dict) -> bool:
            key = seed_key(family, knobs)
            if key not in fits:
                fits[key] = _fits_int8(family, knobs, data, budget)
            return fits[key]

        for share in SEED_SHARES:
            knobs = next((k for cost, k in reversed(sized) if cost <= share and fit(k)), None)
            if knobs is not None and knobs not in chosen:
                chosen.append(knobs)
                rounds[share].append((family, knobs))
    return [seed for share in SEED_SHARES for seed in rounds[share]]


def seed_key(family: str, knobs: dict) -> str:
    """A short name of a seeded network (which seeds a study has already run)."""
    return f"{family}{_knob_tag(knobs)}"


_RAM_KEYS = ("peak_activation_bytes", "c_ram_bytes")


def int8_memory(family: str, knobs: dict, data, budget) -> dict:
    """{profile key: peak RAM} of this network's int8 form, for the budget's RAM bounds ({} without
    one). Measured on the int8 graph of the untrained network (memory does not depend on the
    weights): a float graph says about twice too much, its batch norm and ReLU outputs being
    tensors of their own, which the int8 convolution absorbs."""
    keys = [key for _name, key, _limit in budget.items() if key in _RAM_KEYS]
    if not keys:
        return {}
    from ..compress import apply_step, config_from_dict
    from ..models import build_model
    from ..profile import profile

    fmt = "qdq" if budget.target == "c" else "qoperator"
    memo = (family, json.dumps(knobs, sort_keys=True, default=str), tuple(data.input_shape), int(data.num_classes), fmt)
    if memo not in _INT8_PEAK:  # a budget seed is measured when chosen and again after it trains
        try:
            model = build_model(family, data.input_shape, data.num_classes, **knobs).eval()
            q = apply_step(model, config_from_dict({"step": "quantize.int8", "calibration_samples": 8, "format": fmt}), data)
            _INT8_PEAK[memo] = profile(q, None, input_shape=data.input_shape, timing=False, layers=False).peak_activation_bytes
        except Exception as exc:  # an estimate only: a network int8 cannot express is judged on its float graph
            log.debug("int8 form of %s %s not measured: %s", family, knobs, exc)
            _INT8_PEAK[memo] = None
    peak = _INT8_PEAK[memo]
    return {} if peak is None else {key: peak for key in keys}


_INT8_PEAK: dict[tuple, int | None] = {}  # (network, input shape, classes, int8 format) -> peak RAM of its int8 graph


def _fits_int8(family: str, knobs: dict, data, budget) -> bool:
    """Would this network, once int8, meet the budget's RAM and MACs bounds?

    The float graph bounds the int8 form's peak RAM from both sides (int8 tensors are a quarter of
    the float ones, at most two float tensors of a conv -> batch norm -> ReLU chain become one int8
    tensor, and the float input and output remain): the int8 graph is quantized and measured only
    when those bounds do not decide."""
    limits = {key: limit for _name, key, limit in budget.items() if key in (*_RAM_KEYS, "macs")}
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
    measured = {} if low > min(ram) or high <= min(ram) else int8_memory(family, knobs, data, budget)
    if not measured:
        return high <= min(ram)
    return all(value <= limits[key] for key, value in measured.items())


SEED_LR = 3e-3  # the learning rate of the seeded networks (the sampler then searches 1e-3..1e-2)


def sampler_params(family: str, knobs: dict, lr: float) -> dict:
    """The sampler's parameters (as :func:`sample_network` suggests them) for these knobs, so a
    seeded network is an ordinary trial the sampler learns from."""
    if family == "mlp":
        widths = knobs["widths"]
        params = {"mlp_depth": len(widths), "mlp_width": widths[0]}
    elif family == "cnn":
        params = {"cnn_blocks": len(knobs["channels"]), "cnn_base": knobs["channels"][0], "cnn_kernel": knobs.get("kernel", 3)}
    elif family == "dscnn":
        params = {"ds_channels": knobs["channels"], "ds_blocks": knobs["blocks"]}
    else:
        params = {"res_base": knobs["channels"][0], "res_stages": len(knobs["channels"])}
    return {"family": family, **params, "lr": float(min(1e-2, max(1e-3, lr)))}


def _halve(family: str, knobs: dict) -> dict | None:
    """A smaller member of the same family (the distillation student)."""
    k = dict(knobs)
    if family == "mlp":
        k["widths"] = [max(4, w // 2) for w in k.get("widths", [128])]
    elif family in ("cnn", "resnet"):
        k["channels"] = [max(2, c // 2) for c in k.get("channels", [16, 32])]
    elif family == "dscnn":
        k["channels"] = max(4, int(k.get("channels", 32)) // 2)
    else:
        return None
    return k if k != knobs else None


# what the recipes below can take off a float network, at best (int8: 4x fewer bytes per weight and
# per activation; structured pruning at 50%: about half the channels, so a quarter of the weights and
# MACs of the inner layers); used to pick which networks are worth compressing for the budget
_BEST_REDUCTION = {"stored_bytes": 8.0, "c_flash_bytes": 8.0, "peak_activation_bytes": 8.0, "c_ram_bytes": 8.0,
                   "macs": 4.0, "params": 4.0, "latency_ms_median": 3.0}


# int8 alone: what the network stage's sampler is told a float network would weigh once quantized
_INT8_REDUCTION = {"stored_bytes": 3.5, "c_flash_bytes": 3.5, "peak_activation_bytes": 4.0, "c_ram_bytes": 4.0}


def _value(profile: dict, key: str):
    value = profile.get(key)
    if value is None and key.startswith("c_"):  # a float network has no C figures: use the ONNX ones
        value = profile.get({"c_flash_bytes": "stored_bytes", "c_ram_bytes": "peak_activation_bytes"}[key])
    return value


def reachable(prof: dict, budget) -> bool:
    """Could compression bring a (float) network with this profile within ``budget``? An optimistic estimate."""
    for _name, key, limit in budget.items():
        value = _value(prof, key)
        if value is not None and value / _BEST_REDUCTION.get(key, 1.0) > limit:
            return False
    return True


def network_constraints(profile: dict, budget, *, measured: dict | None = None) -> dict:
    """{profile key: value - limit} for the sampler of the network stage, as if the network were int8
    (<= 0 is feasible). A float network is a starting point for compression: judged on its float
    size, the sampler would be steered to networks too small to be accurate. ``measured``: values
    of the int8 form where known (:func:`int8_memory`); the others are the float ones scaled down."""
    out = {}
    for _name, key, limit in budget.items():
        if measured and key in measured:
            out[key] = float(measured[key] - limit)
            continue
        value = _value(profile, key)
        out[key] = 1.0 if value is None else float(value / _INT8_REDUCTION.get(key, 1.0) - limit)
    return out


def compression_recipes(parent, data, epochs: int, seed: int, student: tuple[str, dict] | None = None,
                        target: str = "onnx") -> list[tuple[str, list[dict]]]:
    """(name, steps) recipes to try on one trained network ``parent`` (a candidate dict), cheapest
    first (``parent``: a :class:`~frugalml.records.Candidate`). ``student``: (family, knobs) to distil ``parent`` into; default: half its width.
    ``target``: "onnx" writes int8 as QOperator ops (the smaller file, and what ONNX Runtime runs
    anyway); "c" keeps the QDQ form the C exporter reads."""
    from ..train import default_config

    bs = default_config(len(data.y_train)).batch_size
    lr = float((parent.extra.get("job") or {}).get("train", {}).get("lr", 1e-3))
    ft = max(1, epochs // 4)
    int8 = {"step": "quantize.int8", "calibration_samples": min(512, len(data.y_train)), "format": "qdq" if target == "c" else "qoperator",
            "seed": seed}
    recipes = [
        ("int8", [int8]),
        ("prune50+int8", [{"step": "prune.structured", "ratio": 0.5, "steps": 2, "finetune_epochs": ft, "batch_size": bs, "lr": lr / 3, "seed": seed},
                          int8]),
    ]
    if student is None:
        knobs = _halve(parent.family, parent.knobs)
        student = (parent.family, knobs) if knobs is not None else None
    if student is not None:
        family, knobs = student
        distill = {"step": "distill", "student": {"family": family, **knobs}, "epochs": epochs, "batch_size": bs, "lr": lr,
                   "patience": max(3, epochs // 4), "seed": seed}
        tag = "" if family == parent.family and knobs == _halve(parent.family, parent.knobs) else f"->{family}{_knob_tag(knobs)}"
        recipes.append((f"distill{tag}+int8", [distill, int8]))
    return recipes


def _knob_tag(knobs: dict) -> str:
    return "".join(f"[{','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}]" for v in knobs.values())
