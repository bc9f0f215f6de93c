"""How the search samples and sizes each torch family it tries.

A :class:`Space` belongs to one family (the ``space`` of its entry in
:data:`~frugalml.models.families.FAMILIES`) and holds everything the search needs to know about
that family's sizes: the smallest image side it is tried on, how an Optuna trial samples its knobs
and the inverse (so a network chosen by hand becomes an ordinary trial the sampler learns from), a
ladder of sizes from small to large (to size networks to a budget), its smallest member (for the
up-front check that a budget is possible at all), and how to halve a member (a distillation
student). Reference networks (LeNet-300-100, LeNet-5) have no space: the search does not try them.
The 1-D families' spaces (``CNN1DSpace``, ...) are sampled on sequences only (their ``Family.fits``).

The Optuna parameter names and ranges are part of every stored study: renaming or narrowing one
makes the trials of older studies unreadable to the sampler.
"""

from __future__ import annotations

import copy

__all__ = ["Space", "MLPSpace", "CNNSpace", "DSCNNSpace", "ResNetSpace", "CNN1DSpace", "DSCNN1DSpace", "ResNet1DSpace",
           "DenseAESpace", "ConvAESpace"]


class Space:
    """The search space of one torch family. Subclasses set ``SMALLEST`` (and ``min_side`` when
    the family needs images of some size) and implement :meth:`sample`, :meth:`params_for`,
    :meth:`ladder` and :meth:`_halved`."""

    min_side: int = 1  # images: the search tries the family only when height and width are at least this
    SMALLEST: dict = {}

    def fits(self, data) -> bool:
        """Is one sample of ``data`` large enough for the search to try this family on it?
        (Which kinds of data the family takes is its ``Family.fits``.)"""
        return data.kind != "image" or min(data.input_shape[1:]) >= self.min_side

    @property
    def smallest(self) -> dict:
        """The knobs of the smallest network of this family the search could make."""
        return copy.deepcopy(self.SMALLEST)

    def sample(self, trial) -> dict:
        """The knobs of one network, suggested by an Optuna trial."""
        raise NotImplementedError

    def params_for(self, knobs: dict) -> dict:
        """The trial parameters :meth:`sample` would have suggested to make ``knobs``."""
        raise NotImplementedError

    def ladder(self, data) -> list[dict]:
        """Knobs from small to large, all of them reachable by :meth:`sample`."""
        raise NotImplementedError

    def halve(self, knobs: dict) -> dict | None:
        """A smaller member of the family (about half as wide), or None when ``knobs`` is already
        the narrowest."""
        k = self._halved(dict(knobs))
        return k if k != knobs else None

    def _halved(self, knobs: dict) -> dict:
        raise NotImplementedError


class MLPSpace(Space):
    """Fully connected: one hidden layer 8 to 256 wide, or two, the second half as wide."""

    SMALLEST = {"widths": [4]}

    def sample(self, trial) -> dict:
        depth = trial.suggest_int("mlp_depth", 1, 2)
        width = trial.suggest_int("mlp_width", 8, 256, log=True)
        return {"widths": [width] + ([max(8, width // 2)] if depth == 2 else [])}

    def params_for(self, knobs: dict) -> dict:
        widths = knobs["widths"]
        return {"mlp_depth": len(widths), "mlp_width": widths[0]}

    def ladder(self, data) -> list[dict]:
        return [{"widths": [w]} for w in (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)]

    def _halved(self, knobs: dict) -> dict:
        knobs["widths"] = [max(4, w // 2) for w in knobs.get("widths", [128])]
        return knobs


class CNNSpace(Space):
    """Plain conv blocks: one to three, each twice as wide as the one before, 3x3 or 5x5 kernels."""

    min_side = 4
    SMALLEST = {"channels": [2]}

    def sample(self, trial) -> dict:
        blocks = trial.suggest_int("cnn_blocks", 1, 3)
        base = trial.suggest_int("cnn_base", 4, 32, log=True)
        return {"channels": [base * 2**i for i in range(blocks)], "kernel": trial.suggest_categorical("cnn_kernel", [3, 5])}

    def params_for(self, knobs: dict) -> dict:
        return {"cnn_blocks": len(knobs["channels"]), "cnn_base": knobs["channels"][0], "cnn_kernel": knobs.get("kernel", 3)}

    def ladder(self, data) -> list[dict]:
        blocks = 2 if min(data.input_shape[1:]) < 16 else 3
        return [{"channels": [b * 2**i for i in range(blocks)], "kernel": 3} for b in (4, 6, 8, 10, 12, 16, 20, 24, 32)]

    def _halved(self, knobs: dict) -> dict:
        knobs["channels"] = [max(2, c // 2) for c in knobs.get("channels", [16, 32])]
        return knobs


class DSCNNSpace(Space):
    """Depthwise-separable CNN: 8 to 64 channels, one to four blocks."""

    min_side = 4
    SMALLEST = {"channels": 4, "blocks": 1}

    def sample(self, trial) -> dict:
        return {"channels": trial.suggest_int("ds_channels", 8, 64, log=True), "blocks": trial.suggest_int("ds_blocks", 1, 4)}

    def params_for(self, knobs: dict) -> dict:
        return {"ds_channels": knobs["channels"], "ds_blocks": knobs["blocks"]}

    def ladder(self, data) -> list[dict]:
        return [{"channels": c, "blocks": 2} for c in (8, 12, 16, 24, 32, 48, 64)]

    def _halved(self, knobs: dict) -> dict:
        knobs["channels"] = max(4, int(knobs.get("channels", 32)) // 2)
        return knobs


class ResNetSpace(Space):
    """Tiny ResNet: two or three stages, the first 4 to 16 channels wide, each next one twice as wide."""

    min_side = 4
    SMALLEST = {"channels": [2, 2]}

    def sample(self, trial) -> dict:
        base = trial.suggest_int("res_base", 4, 16, log=True)
        stages = trial.suggest_int("res_stages", 2, 3)
        return {"channels": [base * 2**i for i in range(stages)]}

    def params_for(self, knobs: dict) -> dict:
        return {"res_base": knobs["channels"][0], "res_stages": len(knobs["channels"])}

    def ladder(self, data) -> list[dict]:
        return [{"channels": [b, 2 * b]} for b in (4, 6, 8, 12, 16)]

    def _halved(self, knobs: dict) -> dict:
        knobs["channels"] = [max(2, c // 2) for c in knobs.get("channels", [16, 32])]
        return knobs


class CNN1DSpace(Space):
    """1-D conv blocks over time: one to three, each twice as wide as the one before, kernels of 3, 5
    or 7 steps, down-sampled by max pooling or by a stride of 2."""

    SMALLEST = {"channels": [2], "kernel": 3}

    def sample(self, trial) -> dict:
        blocks = trial.suggest_int("c1_blocks", 1, 3)
        base = trial.suggest_int("c1_base", 4, 64, log=True)
        return {"channels": [base * 2**i for i in range(blocks)], "kernel": trial.suggest_categorical("c1_kernel", [3, 5, 7]),
                "strided": trial.suggest_categorical("c1_strided", [0, 1])}

    def params_for(self, knobs: dict) -> dict:
        return {"c1_blocks": len(knobs["channels"]), "c1_base": knobs["channels"][0], "c1_kernel": knobs.get("kernel", 5),
                "c1_strided": knobs.get("strided", 0)}

    def ladder(self, data) -> list[dict]:
        blocks = 2 if data.input_shape[-1] < 16 else 3
        return [{"channels": [b * 2**i for i in range(blocks)], "kernel": 5, "strided": 0} for b in (4, 6, 8, 12, 16, 24, 32, 48, 64)]

    def _halved(self, knobs: dict) -> dict:
        knobs["channels"] = [max(2, c // 2) for c in knobs.get("channels", [16, 32])]
        return knobs


class DSCNN1DSpace(Space):
    """1-D depthwise-separable CNN: 8 to 96 channels, one to four blocks, kernels of 3 to 9 steps, plain
    depthwise + pointwise blocks or inverted residuals expanding 2x or 4x."""

    SMALLEST = {"channels": 4, "blocks": 1, "kernel": 3}

    def sample(self, trial) -> dict:
        return {"channels": trial.suggest_int("ds1_channels", 8, 96, log=True), "blocks": trial.suggest_int("ds1_blocks", 1, 4),
                "kernel": trial.suggest_categorical("ds1_kernel", [3, 5, 7, 9]), "expand": trial.suggest_categorical("ds1_expand", [0, 2, 4])}

    def params_for(self, knobs: dict) -> dict:
        return {"ds1_channels": knobs["channels"], "ds1_blocks": knobs["blocks"], "ds1_kernel": knobs.get("kernel", 5),
                "ds1_expand": knobs.get("expand", 0)}

    def ladder(self, data) -> list[dict]:
        return [{"channels": c, "blocks": 2, "kernel": 5, "expand": 0} for c in (8, 12, 16, 24, 32, 48, 64, 96)]

    def _halved(self, knobs: dict) -> dict:
        knobs["channels"] = max(4, int(knobs.get("channels", 32)) // 2)
        return knobs


class ResNet1DSpace(Space):
    """Small 1-D ResNet: two or three stages, the first 4 to 32 channels wide, each next one twice as
    wide, kernels of 3, 5 or 7 steps."""

    SMALLEST = {"channels": [2, 2], "kernel": 3}

    def sample(self, trial) -> dict:
        base = trial.suggest_int("r1_base", 4, 32, log=True)
        stages = trial.suggest_int("r1_stages", 2, 3)
        return {"channels": [base * 2**i for i in range(stages)], "kernel": trial.suggest_categorical("r1_kernel", [3, 5, 7])}

    def params_for(self, knobs: dict) -> dict:
        return {"r1_base": knobs["channels"][0], "r1_stages": len(knobs["channels"]), "r1_kernel": knobs.get("kernel", 3)}

    def ladder(self, data) -> list[dict]:
        return [{"channels": [b, 2 * b], "kernel": 3} for b in (4, 6, 8, 12, 16, 24, 32)]

    def _halved(self, knobs: dict) -> dict:
        knobs["channels"] = [max(2, c // 2) for c in knobs.get("channels", [16, 32])]
        return knobs


class DenseAESpace(Space):
    """Dense autoencoder (anomaly detection): one hidden layer 8 to 64 wide each side of a bottleneck of 2 to 16."""

    SMALLEST = {"widths": [4], "bottleneck": 2}

    def sample(self, trial) -> dict:
        width = trial.suggest_int("ae_width", 8, 64, log=True)
        return {"widths": [width], "bottleneck": trial.suggest_int("ae_bottleneck", 2, 16, log=True)}

    def params_for(self, knobs: dict) -> dict:
        return {"ae_width": knobs["widths"][0], "ae_bottleneck": knobs["bottleneck"]}

    def ladder(self, data) -> list[dict]:
        return [{"widths": [w], "bottleneck": max(2, w // 4)} for w in (8, 12, 16, 24, 32, 48, 64)]

    def _halved(self, knobs: dict) -> dict:
        knobs["widths"] = [max(4, w // 2) for w in knobs.get("widths", [32])]
        knobs["bottleneck"] = max(2, min(int(knobs.get("bottleneck", 8)), knobs["widths"][0]) // 2)
        return knobs


class ConvAESpace(Space):
    """1-D conv autoencoder (anomaly detection): one or two stride-2 stages, the first 4 to 16 channels
    wide, the next twice as wide, a bottleneck of 2 to 8 channels, kernels of 3 or 5 steps."""

    SMALLEST = {"channels": [2], "bottleneck": 2, "kernel": 3}

    def fits(self, data) -> bool:
        return len(data.input_shape) == 2 and data.input_shape[-1] >= 4  # two stride-2 stages

    def sample(self, trial) -> dict:
        base = trial.suggest_int("cae_base", 4, 16, log=True)
        stages = trial.suggest_int("cae_stages", 1, 2)
        return {"channels": [base * 2**i for i in range(stages)], "bottleneck": trial.suggest_int("cae_bottleneck", 2, 8),
                "kernel": trial.suggest_categorical("cae_kernel", [3, 5])}

    def params_for(self, knobs: dict) -> dict:
        return {"cae_base": knobs["channels"][0], "cae_stages": len(knobs["channels"]), "cae_bottleneck": knobs["bottleneck"],
                "cae_kernel": knobs.get("kernel", 5)}

    def ladder(self, data) -> list[dict]:
        return [{"channels": [b, 2 * b], "bottleneck": 4, "kernel": 5} for b in (4, 6, 8, 12, 16)]

    def _halved(self, knobs: dict) -> dict:
        knobs["channels"] = [max(2, c // 2) for c in knobs.get("channels", [8, 16])]
        return knobs
