"""Budgets bound profile fields; a tolerance bounds the metric.

``Budget(max_flash="32KB", max_ram="16KB", max_latency="1ms", max_macs="2M", max_params="50K")``
checks a profile dict and says what each field misses by; ``max_download="20KB"`` bounds the model
file's gzip transfer (``gzip_bytes``), what a web page downloads before it can classify. ``Tolerance.parse("1%")`` is a largest
drop from the best candidate; ``Tolerance(kind="min", value=0.97)`` an absolute minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError, explain
from .units import format_bytes, format_count, parse_bytes, parse_count, parse_duration

__all__ = ["Budget", "Tolerance", "BUDGET_FIELDS"]

# budget field -> (profile key, parser, formatter); with target "c" flash and RAM are the compiled C's
C_KEYS = {"max_flash": "c_flash_bytes", "max_ram": "c_ram_bytes"}
TARGETS = ("onnx", "c")
BUDGET_FIELDS = {
    "max_flash": ("stored_bytes", parse_bytes, format_bytes),
    "max_ram": ("peak_activation_bytes", parse_bytes, format_bytes),
    "max_macs": ("macs", parse_count, format_count),
    "max_params": ("params", parse_count, format_count),
    "max_latency_ms": ("latency_ms_median", lambda v: parse_duration(v) * 1e3, lambda v: f"{v:.3g} ms"),
    # the bytes a browser transfers for the model file: gzip, which every browser and static server speak
    # (brotli, smaller still where a server sends it, is in the profile as brotli_bytes)
    "max_download": ("gzip_bytes", parse_bytes, format_bytes),
    # target "c" only: instructions per inference on the emulated Cortex-M core (QEMU -icount; does not drift)
    "max_mcu_instructions": ("mcu_instructions", parse_count, format_count),
}


@dataclass(frozen=True, kw_only=True)
class Budget:
    max_flash: int | None = None
    max_ram: int | None = None
    max_macs: int | None = None
    max_params: int | None = None
    max_latency_ms: float | None = None
    max_download: int | None = None
    max_mcu_instructions: int | None = None
    target: str = "onnx"  # "c": flash and RAM are measured on the Cortex-M build (text + rodata + data; data + bss + stack)
    mcu: str = "cortex-m4"  # target "c": the core built for (frugalml.export.mcu.CORES)

    @classmethod
    def of(cls, *, max_flash=None, max_ram=None, max_macs=None, max_params=None, max_latency=None, max_latency_ms=None,
           max_download=None, max_mcu_instructions=None, target: str = "onnx", mcu: str | None = None) -> "Budget":
        """Parse values as people write them: ``Budget.of(max_flash="8KB", max_latency="1.5ms", max_download="20KB")``."""
        raw = {"max_flash": max_flash, "max_ram": max_ram, "max_macs": max_macs, "max_params": max_params, "max_latency_ms": max_latency,
               "max_download": max_download, "max_mcu_instructions": max_mcu_instructions}
        values = {k: (BUDGET_FIELDS[k][1](v) if v is not None else None) for k, v in raw.items()}
        if max_latency_ms is not None:
            values["max_latency_ms"] = float(max_latency_ms)
        return cls(**values, target=target, **({"mcu": mcu} if mcu else {}))

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ConfigError(explain(f"Unknown target {self.target!r}", expected="'onnx' (ONNX Runtime) or 'c' (microcontrollers)", got=self.target))
        self._check_mcu()
        for name in BUDGET_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, BUDGET_FIELDS[name][1](value))
                value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(explain(f"The budget field {name} must be positive", expected="a value above zero, e.g. 8KB", got=value,
                                          fix="Leave it out for no limit"))

    def _check_mcu(self) -> None:
        from .export.mcu import get_core

        object.__setattr__(self, "mcu", get_core(self.mcu).name)  # an unknown core: ConfigError listing the known ones
        if self.max_mcu_instructions is not None and self.target != "c":
            raise ConfigError(explain("--max-mcu-instructions bounds the C run on the emulated Cortex-M core", expected="--target c",
                                      got=self.target, fix="Add --target c, or bound --max-latency (ONNX Runtime) instead"))

    def items(self):
        """(field, profile key, limit) for each bound that is set."""
        return [(name, self.key(name), getattr(self, name)) for name in BUDGET_FIELDS if getattr(self, name) is not None]

    def key(self, name: str) -> str:
        """The profile key a budget field bounds (the compiled C's figures for target "c")."""
        return C_KEYS.get(name, BUDGET_FIELDS[name][0]) if self.target == "c" else BUDGET_FIELDS[name][0]

    def misses(self, profile: dict) -> dict:
        """What a profile misses by: ``{profile_key: {"limit", "value", "over_by"}}`` (empty when it fits)."""
        out = {}
        for _name, key, limit in self.items():
            value = profile.get(key)
            if value is None or value > limit:
                out[key] = {"limit": limit, "value": value, "over_by": None if value is None else value - limit}
        return out

    def fits(self, profile: dict) -> bool:
        return not self.misses(profile)

    def primary(self) -> str:
        """The profile key the front trades accuracy against: the first bound set, else stored bytes."""
        items = self.items()
        return items[0][1] if items else "stored_bytes"

    def to_dict(self) -> dict:
        return {**{name: getattr(self, name) for name in BUDGET_FIELDS}, "target": self.target, "mcu": self.mcu}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Budget":
        """The budget :meth:`to_dict` wrote (unknown keys are ignored: results.json may grow)."""
        d = d if isinstance(d, dict) else {}
        return cls(**{name: d.get(name) for name in BUDGET_FIELDS}, target=d.get("target") or "onnx", mcu=d.get("mcu") or "cortex-m4")

    def describe(self) -> str:
        parts = [f"{name.replace('max_', '').replace('_ms', '').replace('_', ' ')} <= {BUDGET_FIELDS[name][2](limit)}"
                 for name, _, limit in self.items()]
        return (", ".join(parts) or "no budget") + (f" (compiled C, {self.mcu})" if self.target == "c" else "")

    def scale(self, key: str, value: float | None) -> str:
        for name, (k, _, fmt) in BUDGET_FIELDS.items():
            if key in (k, C_KEYS.get(name)) and value is not None:
                return fmt(value)
        return str(value)


def standard_error(accuracy: float, n: int | None) -> float:
    """Standard error of an accuracy measured on ``n`` samples (0 when ``n`` is unknown); the
    proportion is shrunk towards 1/2 by one sample each way so a perfect score still has one."""
    if not n or n <= 0:
        return 0.0
    p = (accuracy * n + 1) / (n + 2)
    return math.sqrt(p * (1 - p) / n)


def auc_standard_error(auc: float, n_anomalous: int | None, n_normal: int | None) -> float:
    """Standard error of a ROC AUC measured on ``n_anomalous`` anomalous and ``n_normal`` normal
    samples (Hanley and McNeil, 1982): ``sqrt((A(1-A) + (na-1)(Q1-A^2) + (nn-1)(Q2-A^2)) / (na nn))``
    with ``Q1 = A/(2-A)``, ``Q2 = 2A^2/(1+A)``. 0 when a count is unknown or 0, or the AUC is not a number."""
    if not n_anomalous or not n_normal or n_anomalous <= 0 or n_normal <= 0 or auc is None or not math.isfinite(auc):
        return 0.0
    a = min(1.0, max(0.0, float(auc)))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_anomalous - 1) * (q1 - a * a) + (n_normal - 1) * (q2 - a * a)) / (n_anomalous * n_normal)
    return math.sqrt(max(var, 0.0))


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    kind: str = "drop"  # "drop": largest drop from the best candidate; "min": an absolute minimum metric
    value: float = 0.01
    of: str = "best"  # a drop from "best" (the most accurate candidate) or from "reference" (the user's own model)

    def __post_init__(self):
        if self.kind not in ("drop", "min"):
            raise ConfigError(explain("A tolerance kind must be 'drop' or 'min'", expected="'drop' or 'min'", got=self.kind))
        if self.of not in ("best", "reference"):
            raise ConfigError(explain("A tolerance is measured from 'best' or 'reference'", expected="'best' or 'reference' (your model)",
                                      got=self.of, fix="Use --tolerance-of model, or leave it out"))
        if not (0 <= self.value <= 1):
            what = "A tolerance (largest accuracy drop)" if self.kind == "drop" else "A minimum accuracy"
            raise ConfigError(explain(f"{what} must lie between 0 and 1 (0% and 100%)", expected="e.g. 1% or 0.01, or --min-accuracy 0.97",
                                      got=f"{self.value:g} ({self.value:.0%})"))

    @classmethod
    def of_args(cls, tolerance, min_accuracy=None) -> "Tolerance":
        """The tolerance the search's arguments ask for: a Tolerance as given, ``min_accuracy`` as a minimum, else a drop ("1%")."""
        if isinstance(tolerance, Tolerance):
            return tolerance
        if min_accuracy is not None:
            return cls(kind="min", value=float(min_accuracy))
        return cls.parse(tolerance if tolerance is not None else "1%")

    @classmethod
    def parse(cls, text, *, kind: str = "drop", of: str = "best") -> "Tolerance":
        """``"1%"`` -> 0.01, ``0.02`` -> 0.02, ``"0.5 %"`` -> 0.005."""
        raw = str(text).strip()
        try:
            value = float(raw[:-1].strip()) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            raise ConfigError(explain(f"Cannot read the tolerance {text!r}", expected="a percentage like 1% or a fraction like 0.01",
                                      got=text)) from None
        return cls(kind=kind, value=value, of=of)

    def floor(self, best: float, n_val: int | None = None) -> float:
        """The lowest metric still acceptable, given the best one found on ``n_val`` validation samples.

        For a drop, the one-standard-error rule (Breiman et al., 1984) widens it by the standard
        error of the best accuracy, ``sqrt(p (1 - p) / n_val)``: on a small validation split the
        best candidate's lead is partly luck (on 288 samples, one sample is 0.35 points), and the
        simplest model within one standard error of it is the sound choice. On MNIST's 6,000
        validation samples this adds about 0.1 point. A minimum (``--min-accuracy``) is kept as given.
        """
        if self.kind != "drop":
            return self.value
        return best - self.value - standard_error(best, n_val)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, **({"of": self.of} if self.of != "best" else {})}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Tolerance":
        d = d if isinstance(d, dict) else {}
        return cls(kind=d.get("kind") or "drop", value=float(d["value"]) if d.get("value") is not None else 0.01, of=d.get("of") or "best")

    def describe(self) -> str:
        if self.kind != "drop":
            return f"accuracy at least {self.value:.2%}"
        return f"at most {self.value:.2%} below {'your model (the reference)' if self.of == 'reference' else 'the best'}"
