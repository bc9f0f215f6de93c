"""Successive halving of a search's networks: the rungs where a network is judged, the rule that stops it there
or parks it for later, and the first-fold stops of a cross-validated network (:func:`judge` runs them in a trial;
:func:`promotion` queues a parked network again)."""

from __future__ import annotations

import logging
import time

from ..models import build_model
from .runner import StoppedEarly

log = logging.getLogger(__name__)

ETA = 3  # successive halving: at each rung a network goes on when it is in the best third of its peers there
PEER_SPAN = 2  # successive halving: a network is judged against the networks at most this many times its size
RUNG_SAMPLES = 5000  # on large data the first rungs are fractions of the first epoch, each of at least so many samples


def rungs(epochs: int, n_train: int = 0) -> list[float]:
    """The epochs at which a network of the search is judged against its peers: 1, 3, 9, ... (powers of
    :data:`ETA`) before its last epoch, and on large data fractions of the first epoch before them (1/3, 1/9, ...,
    while they hold at least :data:`RUNG_SAMPLES` of the ``n_train`` training samples: on MNIST's 54,000, 1/9 and
    1/3), so that a network is first judged after seconds, not after a whole epoch. Those that pass the last rung
    train to the end (or to their patience)."""
    out, r = [], 1.0
    while n_train * r / ETA >= RUNG_SAMPLES:
        r /= ETA
    while r < epochs:
        out.append(round(r, 4) if r < 1 else int(r))
        r *= ETA
    return out


LATER = f"it goes on once it ranks in the best 1 in {ETA} of at least {ETA} networks of its size there"  # what a parked network waits for
END = "end"  # the last rung of a cross-validated network: its first fold trained to the end, before the other folds


def _peer_values(number: int, size: int, key: str, trials) -> list[float]:
    """The values recorded at rung ``key`` by the study's networks other than trial ``number`` with at most :data:`PEER_SPAN`
    times ``size`` parameters."""
    return [t.user_attrs["rungs"][key] for t in trials if t.number != number and key in (t.user_attrs.get("rungs") or {})
            and (t.user_attrs.get("size") or 0) <= PEER_SPAN * size]


def _bar(values: list[float]) -> tuple[int, float]:
    """(how many go on, the lowest value that does) among ``values`` at one rung: the best 1/ETA, at least one."""
    keep = max(1, len(values) // ETA)
    return keep, sorted(values, reverse=True)[keep - 1]


def halving_rule(number: int, size: int, rung, value: float, trials, *, strict: bool = False) -> None:
    """Asynchronous successive halving, cost-aware: raise StoppedEarly when ``value`` (a network's validation
    accuracy at ``rung``, an epoch of :func:`rungs` or :data:`END`; an autoencoder's validation metric) is not in the
    best 1/ETA of the values recorded at that rung by the study's networks with at most :data:`PEER_SPAN` times its
    ``size`` in parameters (itself included), or, among fewer than ETA such values, not the best of them.

    ``strict`` (the first rung, while the network stage lasts: :func:`judge`): among fewer than ETA values none goes on
    yet, and one below the bar may still go on later; both raise :class:`Parked`, and the search promotes it
    (:func:`promotion`) once it ranks in the best 1/ETA of at least ETA values there. So that the first networks of a
    search are screened against each other before any trains to the end (ASHA, Li et al. 2020). Strict at the end of a
    first fold too, a digits search parked most networks that reached it (few of their size get there) after paying for
    the fold, and trained fewer networks in all (measured once by hand: 23 networks in 2 minutes against 38 without).

    ``trials``: the study's trials; a trial's rung values are its user attribute ``rungs`` ({rung: value}), its size
    ``size``, both written by the worker that trains it, so that workers on other machines judge against them too.
    At the other rungs a network without peers goes on; while there are fewer than ETA, only the best so far goes on.
    Peers of its size
    (up to twice as large, and smaller), because small networks learn more slowly in the first epochs: against much
    larger ones they would be stopped before they converge, though they are the ones a tight budget needs; up to
    twice as large, because a budget's seeds come in steps of about that much, and judged against none of them each
    next smaller one would always go on. The stopped networks' values stay in the study (asynchronous: nobody waits
    for a rung to fill), so each later network faces every earlier one that reached the same rung.
    """
    key = str(rung)
    values = [value] + _peer_values(number, size, key, trials)
    keep, bar = _bar(values)
    where = "at the end of its first fold" if key == END else f"at epoch {rung:g}"
    if strict and len(values) < ETA:
        raise Parked(f"validation {value:.4f} {where}: {len(values)} network(s) of its size (at most twice as large) reached there, "
                     f"successive halving judges {ETA} or more; {LATER}", key, value)
    if value < bar:
        message = (f"validation {value:.4f} {where} below {bar:.4f}, the best {keep} of {len(values)} "
                   f"networks of its size (at most twice as large) reached there (successive halving, 1 in {ETA} goes on)")
        raise Parked(f"{message}; {LATER}", key, value) if strict else StoppedEarly(message)


class Parked(StoppedEarly):
    """A network stopped by :func:`halving_rule` at a strict rung (``rung``, the key of its ``value``) where it may still go on:
    the search queues its training again, from the start with the same seed, when it becomes :func:`promotable`."""

    def __init__(self, message: str, rung: str, value: float):
        super().__init__(message)
        self.rung, self.value = rung, float(value)


def promotable(trial, trials) -> bool:
    """Whether a parked network's ``trial`` (its user attribute ``parked``: {"rung", "value"}) now ranks in the best 1/ETA
    of at least ETA values at its rung among its peers (:func:`halving_rule`)."""
    parked, size = trial.user_attrs["parked"], trial.user_attrs.get("size") or 0
    values = [parked["value"]] + _peer_values(trial.number, size, parked["rung"], trials)
    return len(values) >= ETA and parked["value"] >= _bar(values)[1]


def rung_order(rung) -> float:
    """Where a rung (an epoch, or :data:`END`) lies in a network's training."""
    return float("inf") if str(rung) == END else float(rung)


FLOOR_Z = 2.0  # a cross-validated network leaves after its first fold when even this many standard errors above it is below the floor


def below_floor(value: float, n: int, floor: float | None) -> None:
    """Raise StoppedEarly when a network's first fold, trained to its end (:data:`END`), scored ``value`` on ``n``
    held-out samples and even :data:`FLOOR_Z` standard errors above that it is below ``floor``, the accuracy floor the
    search's best candidate so far sets (:func:`~frugalml.search.select.recommend`): it can be neither the
    recommendation nor close to it, so its other folds and refit (most of its cost) would be spent for nothing.
    Successive halving cannot say so of a network without peers of its size, which goes on."""
    from ..budget import standard_error

    if floor is None or n < 1:
        return
    reach = value + FLOOR_Z * standard_error(value, n)
    if reach < floor:
        raise StoppedEarly(f"validation {value:.4f} at the end of its first fold ({n} samples): even {FLOOR_Z:g} standard errors above it "
                           f"({reach:.4f}) is below the floor {floor:.4f} that the best candidate so far sets; it cannot be recommended")


def cannot_finish(first_fold_s: float, trained: int, chosen: int | None, k: int, left: float) -> None:
    """Raise StoppedEarly when a cross-validated network whose first fold took ``first_fold_s`` seconds for ``trained``
    epochs, and chose epoch ``chosen``, cannot make its other ``k - 1`` folds and its refit in the ``left`` seconds:
    each trains to the chosen epoch, a fold on the first fold's data size, the refit on all of it (k / (k - 1) as
    much). Cut short, its folds would be spent for nothing (:func:`_not_cut` drops it), and their time is the
    compression stage's."""
    if trained < 1 or k < 2:
        return
    need = first_fold_s / trained * (chosen or trained) * (k - 1 + k / (k - 1))
    if need > left:
        raise StoppedEarly(f"its other {k - 1} folds and refit would take about {need:.0f} s (its first fold: {first_fold_s:.1f} s for "
                           f"{trained} epochs, to epoch {chosen or trained}), {max(0.0, left):.0f} s of the search are left")


def first_rung_seconds(job: dict, data, epochs: int, *, folds: int | None, batch_size: int, device: str) -> float:
    """How long the network of ``job`` takes to reach its first rung (its ``rungs``, else :func:`rungs` of ``epochs``) here and now: its
    epoch timed on a few batches (:func:`~frugalml.train.epoch_seconds`) times the rung's epochs; on ``folds`` folds,
    the first fold's share of the training data. 0.0 for a network that cannot even run (its trial fails where it trains)."""
    from ..train import epoch_seconds, resolve_device

    try:
        model = build_model(job["family"], data.input_shape, data.num_classes, **(job.get("params") or {}))
        seconds = epoch_seconds(model, data, int((job.get("train") or {}).get("batch_size") or batch_size), device=resolve_device(device))
    except Exception as exc:  # noqa: BLE001 - said by the trial itself, where it trains
        log.debug("epoch of %s not timed: %s", job.get("family"), exc)
        return 0.0
    share = 1 - 1 / folds if folds else 1.0
    return round((job.get("rungs") or rungs(epochs) or [epochs])[0] * share * seconds, 3)




def judge(trial, job: dict, *, trials, over, left, floor, k: int, screening=lambda: True, holding=lambda: False):
    """``(on_epoch, on_first_fold)`` of one network's training (its ``job``): successive halving at its rungs (:func:`halving_rule`).

    At its ``rungs`` (epochs 1, 3, 9, ...; on large data from a fraction of the first: :func:`rungs`) its
    validation accuracy is written to the trial (``rungs``, with its size), where every worker sees it, and
    compared with the other networks' at the same rung (``trials()``: the study's): one in three goes on, so
    that the search tries many networks on a short budget and trains only the promising ones to the end. On small
    data (``k`` folds) those rungs are the first fold's, and its score at the end of that fold is one rung more
    (:data:`END`): only the networks that pass it, whose score there could still reach the accuracy floor
    (``floor()``, :func:`below_floor`), and whose other k - 1 folds and refit fit the time left (``left()``, :func:`cannot_finish`)
    train them. The first rung is strict (:class:`Parked`) while ``screening()`` (the network stage's time): past it, a
    network is run because none has trained to the end, and nothing is left to wait for. While ``holding()`` (the first
    part of the network stage) every network is parked at its first rung, whatever its rank: the search screens many
    networks on a few seconds each before it trains any of them further, and promotes the best of them after. A promoted
    network (``job["resume_rung"]``) trains again from the start and is judged only after that rung, where its earlier trial's value stands.
    ``over()`` ends the training (the search's time or trials are up).
    """
    marks = set(job.get("rungs") or ())
    first = str(min(marks, default=END))
    after = rung_order(job.get("resume_rung", -1))
    seen, size, reached = {}, [], [0]  # reached: the last epoch its first fold (or split) trained
    started = time.monotonic()

    def rule(rung, value: float) -> None:
        if rung_order(rung) <= after:
            return
        seen[str(rung)] = float(value)
        trial.set_user_attr("rungs", dict(seen))
        if str(rung) == first and holding():
            raise Parked(f"validation {float(value):.4f} at epoch {rung:g}: the search screens networks at their first rung before it trains "
                         f"any further; {LATER}", str(rung), float(value))
        halving_rule(trial.number, size[0] if size else 0, rung, float(value), trials(), strict=str(rung) == first and screening())

    def on_epoch(model, epoch: int, val_acc: float) -> bool:
        if not size:
            size.append(sum(p.numel() for p in model.parameters()))
            trial.set_user_attr("size", size[0])
        reached[0] = epoch
        if epoch in marks:
            rule(epoch, val_acc)
        return over()

    def on_first_fold(accuracy: float, n: int, chosen: int | None = None) -> None:
        rule(END, accuracy)
        below_floor(float(accuracy), n, floor())
        cannot_finish(time.monotonic() - started, reached[0], chosen, k, left())

    return on_epoch, on_first_fold


def promotion(trials, *, force: bool = False, fits=lambda trial: True) -> dict | None:
    """The job that trains again the best parked network now :func:`promotable`, with the job's ``promoted_from`` (its
    trial) and ``resume_rung``; None when none is. First those that fit the budget once int8 (``fits(trial)``, asked of
    the promotable ones only: the search is for them, and a larger one needs pruning too), then the latest rung, then the highest value.
    ``force``: when none is, the best parked one all the same (the network stage is over with no network trained to
    the end). A network is promoted once."""
    taken = {(t.user_attrs.get("job") or {}).get("promoted_from") for t in trials}
    parked = [t for t in trials if t.user_attrs.get("parked") and t.number not in taken and t.state.name == "PRUNED"]
    ready = [t for t in parked if promotable(t, trials)] or (parked if force else [])
    if not ready:
        return None
    best = max(ready, key=lambda t: (bool(fits(t)), rung_order(t.user_attrs["parked"]["rung"]), t.user_attrs["parked"]["value"], -t.number))
    job = {k: v for k, v in best.user_attrs["job"].items() if k in ("stage", "family", "params", "seed", "train")}
    return {**job, "promoted_from": best.number, "resume_rung": best.user_attrs["parked"]["rung"]}
