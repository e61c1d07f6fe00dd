"""Detection and classification metrics on torch tensors (CPU or GPU), exact under ties.

Conventions:

* a **score** is higher for more anomalous samples, everywhere;
* **labels** are either an integer tensor where ``-1`` marks OOD / anomaly / unknown and
  ``>= 0`` a known (in-distribution) class, or a boolean ``is_ood`` tensor (``True`` =
  OOD). :func:`as_is_ood` turns either form into ``is_ood`` and validates it;
* every function names its **positive class** in its docstring. The detection metrics
  return Python ``float`` values.

Inputs may be torch tensors on any device or NumPy arrays. Results do not depend on the
device or on float32 vs float64 beyond the rounding of the scores themselves.

Why the detection metrics are hand-written rather than calls to scikit-learn:

* **Exactness on the tensors where the scores are.** GPU scores are never copied to the
  host; everything is computed on their device with integer counts (int64), so ties are
  handled exactly (AUROC counts a tie as 1/2; AUPR and FPR@TPR group tied scores into one
  threshold), matching ``sklearn.metrics.roc_auc_score``, ``average_precision_score`` and
  ``roc_curve(..., drop_intermediate=False)`` to 1e-9 (tested on tie-heavy data).
* **Speed.** Instead of one argsort over all scores (as scikit-learn and a plain torch
  version do), the in-distribution and the OOD scores are sorted separately, in their own
  dtype (float32 stays float32), and every metric is derived from integer cross-counts:
  ``left[j]`` = number of in-distribution scores strictly below the j-th smallest OOD
  score, from one ``searchsorted`` of the smaller sorted class into the larger (plus a
  ``bincount`` when the roles are swapped). AUROC needs a second search only over the
  distinct tied values; AUPR-In and AUPR-Out need one pass over the distinct values; the
  FPR@TPR thresholds are order statistics (``partition`` / ``kthvalue`` in linear time
  when called alone). On CPU the sort and the search run in NumPy (zero-copy views of
  CPU tensors): measured on the project's 2-core CPU NumPy's sort is about 3x faster than
  ``torch.sort``; from 2**20 scores on, the two sorts and the two halves of the search
  run on two threads (NumPy releases the GIL there) unless ``torch.get_num_threads()``
  is 1. On CUDA the same steps run in torch. ``benchmarks/metrics.py``
  measures the result against scikit-learn (10 million scores: several times faster).

The final ratios are formed from exact Python integers (AUROC, FPR) or accumulated in
float64 (AUPR).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any, TypeAlias, TypeVar

import numpy as np
import torch

from encircle.errors import DataError

__all__ = [
    "OOD_METRIC_KEYS",
    "ArrayLike",
    "OODMetrics",
    "accuracy",
    "as_is_ood",
    "aupr_in",
    "aupr_out",
    "auroc",
    "confusion_matrix",
    "fpr_at_tpr_in",
    "fpr_at_tpr_out",
    "ood_metrics",
    "oscr",
]

ArrayLike: TypeAlias = torch.Tensor | np.ndarray
"""A torch tensor on any device, or a NumPy array."""

# Internally an array is a NumPy array (CPU work) or a torch tensor (any other device).
# Both support the same indexing and arithmetic, so the metric code below is shared; the
# few operations whose spelling differs go through the ``_`` helpers.
_Arr: TypeAlias = Any

_T = TypeVar("_T")
_U = TypeVar("_U")

# Below this many scores the two-thread split of the NumPy work is not worth a thread.
_PARALLEL_MIN = 1 << 20

OOD_METRIC_KEYS: tuple[str, ...] = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr_in", "fpr_at_95_tpr_out")
"""The keys of :func:`ood_metrics` and :meth:`OODMetrics.compute`, in order."""


# --------------------------------------------------------------------------- validation


def _shape(x: ArrayLike) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _check_array(x: object, name: str) -> ArrayLike:
    """``x`` if it is an array, with unsigned integers wider than a byte as int64.

    torch can neither reduce nor compare those (``min``, ``<`` against int64), and a
    NumPy array of them becomes such a tensor on the way to the classification metrics.
    """
    if not isinstance(x, torch.Tensor | np.ndarray):
        raise DataError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "u" or x.dtype.itemsize == 1:
            return x
        signed: ArrayLike = x.astype(np.int64)
    else:
        if x.dtype in (torch.bool, torch.uint8) or x.is_floating_point() or x.is_complex() or x.is_signed():
            return x
        signed = x.detach().to(torch.int64)
    if bool((signed < 0).any()):  # wrapped around: 2**63 or more
        raise DataError(f"{name} must be integers below 2**63, got larger {x.dtype} values")
    return signed


def _kind(x: ArrayLike) -> str:
    """'b' (bool), 'i' (signed or unsigned integer), 'f' (real float) or 'other'."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool:
            return "b"
        if x.is_complex():
            return "other"
        return "f" if x.is_floating_point() else "i"
    return {"b": "b", "i": "i", "u": "i", "f": "f"}.get(x.dtype.kind, "other")


def _backend(x: ArrayLike) -> _Arr:
    """NumPy for CPU data (zero-copy for CPU tensors), torch for data on other devices."""
    if isinstance(x, np.ndarray):
        return x
    x = x.detach()
    if x.device.type != "cpu":
        return x
    if x.dtype in (torch.float16, torch.bfloat16):  # NumPy has no bfloat16; half sorts slowly
        x = x.float()
    return x.numpy()


def _like(x: ArrayLike, ref: _Arr) -> _Arr:
    """``x`` moved to the backend and device of ``ref``."""
    if isinstance(ref, np.ndarray):
        return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.detach().to(ref.device)


def _scores(scores: object, name: str = "scores", *, allow_empty: bool = False) -> _Arr:
    """Validated 1-D, non-empty (unless ``allow_empty``), finite, real scores on their backend."""
    x = _check_array(scores, name)
    if x.ndim != 1:
        raise DataError(f"{name} must be 1-D with shape (N,), got shape {_shape(x)}")
    if x.shape[0] == 0 and not allow_empty:
        raise DataError(f"{name} must hold at least one sample, got an empty array of shape (0,)")
    kind = _kind(x)
    if kind == "other":
        raise DataError(f"{name} must be real numbers (float, int or bool), got dtype {x.dtype}")
    arr = _backend(x)
    if kind == "b":
        arr = arr.astype(np.int64) if isinstance(arr, np.ndarray) else arr.long()
    elif kind == "f":
        finite = np.isfinite(arr) if isinstance(arr, np.ndarray) else torch.isfinite(arr)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise DataError(f"{name} must be finite, got {bad} NaN or infinite value(s) out of {x.shape[0]}")
    return arr


def _is_ood(labels: object, n: int | None, name: str = "labels") -> ArrayLike:
    """Validated boolean ``is_ood`` in the input's own backend (tensor or NumPy)."""
    y = _check_array(labels, name)
    if y.ndim != 1:
        raise DataError(f"{name} must be 1-D with shape (N,), got shape {_shape(y)}")
    if n is not None and y.shape[0] != n:
        raise DataError(f"{name} must have one entry per score ({n} scores), got {y.shape[0]} labels")
    kind = _kind(y)
    if kind == "b":
        return y
    if kind != "i":
        raise DataError(
            f"{name} must be integer class ids (-1 = OOD, >= 0 = in-distribution) or booleans "
            f"(True = OOD), got dtype {y.dtype}"
        )
    if y.shape[0]:
        low = int(y.min())
        if low < -1:
            raise DataError(f"{name} must be -1 (OOD) or >= 0 (in-distribution), got {low}")
    return y < 0


def as_is_ood(labels: ArrayLike) -> torch.Tensor:
    """Turn labels of either form into a boolean ``is_ood`` tensor.

    Args:
        labels: ``(N,)`` integer labels (``-1`` = OOD / anomaly / unknown, ``>= 0`` = a
            known, in-distribution class) or ``(N,)`` booleans (``True`` = OOD).

    Returns:
        ``(N,)`` bool tensor on the device of ``labels`` (CPU for NumPy input), ``True``
        where the sample is OOD.

    Raises:
        DataError: ``labels`` is not 1-D, not integer or bool, or holds values below -1.
    """
    is_ood = _is_ood(labels, None)
    return torch.from_numpy(np.ascontiguousarray(is_ood)) if isinstance(is_ood, np.ndarray) else is_ood


def _tpr(tpr: object) -> float:
    if isinstance(tpr, bool) or not isinstance(tpr, int | float | np.floating | np.integer):
        raise DataError(f"tpr must be a number in (0, 1], got {type(tpr).__name__}")
    value = float(tpr)
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise DataError(f"tpr must be in (0, 1], got {value}")
    return value


# ---------------------------------------------------------------------- backend helpers


def _both(first: Callable[[], _T], second: Callable[[], _U], *, parallel: bool) -> tuple[_T, _U]:
    """``(first(), second())``, the first on a helper thread when ``parallel``.

    NumPy releases the GIL in ``sort`` and ``searchsorted``, so two big calls overlap on two
    cores. A fresh thread per call (not a pool kept across calls) stays safe across fork.
    """
    if not parallel:
        return first(), second()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(first)
        b = second()
        return future.result(), b


def _sort_owned(x: _Arr) -> _Arr:
    """Sorted ``x``; ``x`` is a fresh array owned by the caller, so NumPy sorts it in place."""
    if isinstance(x, np.ndarray):
        x.sort()
        return x
    return torch.sort(x).values


def _searchsorted(sorted_values: _Arr, queries: _Arr, *, right: bool) -> _Arr:
    if isinstance(sorted_values, np.ndarray):
        return np.searchsorted(sorted_values, queries, side="right" if right else "left")
    return torch.searchsorted(sorted_values, queries, right=right)


def _count(mask: _Arr) -> int:
    return int(np.count_nonzero(mask)) if isinstance(mask, np.ndarray) else int(mask.sum())


def _f64(x: _Arr) -> _Arr:
    return x.astype(np.float64) if isinstance(x, np.ndarray) else x.double()


def _runs(sorted_values: _Arr) -> tuple[_Arr, _Arr]:
    """First positions and lengths of the runs of equal values of an ascending array."""
    n = sorted_values.shape[0]
    if isinstance(sorted_values, np.ndarray):
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
        first = np.flatnonzero(change)
        return first, np.diff(first, append=n)
    _, counts = torch.unique_consecutive(sorted_values, return_counts=True)
    return torch.cumsum(counts, 0) - counts, counts


def _cumulative_counts(values: _Arr, size: int) -> _Arr:
    """``out[i]`` = number of entries of ``values`` (integers in ``[0, size)``) that are ``<= i``."""
    if isinstance(values, np.ndarray):
        return np.cumsum(np.bincount(values, minlength=size))
    return torch.cumsum(torch.bincount(values, minlength=size), 0)


def _kth_smallest(x: _Arr, k: int) -> _Arr:
    """The k-th smallest value (1-based), in linear time."""
    if isinstance(x, np.ndarray):
        return np.partition(x, k - 1)[k - 1]
    return torch.kthvalue(x, k).values


def _smallest_count(tpr: float, n: int) -> int:
    """The smallest ``k`` in ``1..n`` with ``k / n >= tpr``, compared in floating point.

    ``roc_curve`` compares the float64 ratio ``k / n`` with ``tpr``; Python's ``k / n`` is
    the same correctly rounded float64, so the same ``k`` is chosen.
    """
    k = min(max(1, math.ceil(tpr * n)), n)
    while k > 1 and (k - 1) / n >= tpr:
        k -= 1
    while k < n and k / n < tpr:
        k += 1
    return k


# ---------------------------------------------------------------------------- the split


def _split_unsorted(scores: object, labels: object) -> tuple[_Arr, _Arr]:
    """Validate and return the (unsorted) OOD and in-distribution scores."""
    s = _scores(scores)
    n = int(s.shape[0])
    is_ood = _like(_is_ood(labels, n), s)
    n_ood = _count(is_ood)
    if n_ood == 0:
        raise DataError(
            f"labels must contain both classes; got {n} in-distribution (label >= 0 / False) and "
            "no OOD (label -1 / True) sample"
        )
    if n_ood == n:
        raise DataError(
            f"labels must contain both classes; got {n} OOD (label -1 / True) and "
            "no in-distribution (label >= 0 / False) sample"
        )
    return s[is_ood], s[~is_ood]


class _Sorted:
    """Sorted OOD and in-distribution scores and the integer cross-counts shared by the metrics."""

    def __init__(self, scores: object, labels: object) -> None:
        ood, ind = _split_unsorted(scores, labels)
        self.n_ood = int(ood.shape[0])
        self.n_in = int(ind.shape[0])
        # On CPU the NumPy work runs on two threads for big inputs, unless torch was told
        # to use one thread (torch.set_num_threads(1)); on GPU torch schedules the work.
        self.parallel = (
            isinstance(ood, np.ndarray) and self.n_ood + self.n_in >= _PARALLEL_MIN and torch.get_num_threads() > 1
        )
        # boolean indexing made copies: NumPy sorts them in place
        self.ood, self.ind = _both(lambda: _sort_owned(ood), lambda: _sort_owned(ind), parallel=self.parallel)

    @cached_property
    def left(self) -> _Arr:
        """``left[j]`` = number of in-distribution scores strictly below ``ood[j]`` (int64).

        A binary search per query, so the smaller class is searched in the larger: if
        there are fewer ID scores, ``r[i]`` = #{OOD <= ind[i]} is searched instead, and
        since ``ind[i] < ood[j]`` exactly when ``r[i] <= j``, ``left[j]`` = #{i : r[i] <= j}.
        """
        if self.n_ood <= self.n_in:
            return self._search(self.ind, self.ood, right=False)
        r = self._search(self.ood, self.ind, right=True)
        return _cumulative_counts(r, self.n_ood + 1)[: self.n_ood]

    def _search(self, sorted_values: _Arr, queries: _Arr, *, right: bool) -> _Arr:
        if not self.parallel:
            return _searchsorted(sorted_values, queries, right=right)
        half = queries.shape[0] // 2
        a, b = _both(
            lambda: _searchsorted(sorted_values, queries[:half], right=right),
            lambda: _searchsorted(sorted_values, queries[half:], right=right),
            parallel=True,
        )
        return np.concatenate([a, b])

    def auroc(self) -> float:
        # sum_j #{ID < ood_j} + 1/2 #{ID == ood_j}. A tie exists only where the first ID
        # score not below ood_j equals it; the tied ID counts come from a second search over
        # the distinct tied values only.
        left = self.left
        # OOD scores above every ID score (left == n_in, a suffix) cannot tie: skip them.
        c = int(_searchsorted(self.ood, self.ind[-1:], right=True)[0])
        tied = self.ind[left[:c]] == self.ood[:c]
        tied_pairs = 0
        if bool(tied.any()):
            values, tied_left = self.ood[:c][tied], left[:c][tied]
            first, counts = _runs(values)
            equal_in = _searchsorted(self.ind, values[first], right=True) - tied_left[first]
            tied_pairs = int((counts * equal_in).sum())
        numerator = 2 * int(left.sum()) + tied_pairs
        return numerator / (2 * self.n_ood * self.n_in)  # exact integers, one correct rounding

    def aupr_out(self) -> float:
        # One threshold per distinct OOD score v (ascending): TP = #OOD >= v, FP = #ID >= v.
        first, counts = _runs(self.ood)
        tp = self.n_ood - first
        fp = self.n_in - self.left[first]
        return float((_f64(counts) * (_f64(tp) / _f64(tp + fp))).sum()) / self.n_ood

    def aupr_in(self) -> float:
        # Positive = ID, ranked by -score: one threshold per distinct ID score w (the run
        # ending at index i): TP = #ID <= w = i + 1, FP = #OOD <= w = #{j : left[j] <= i}.
        first, counts = _runs(self.ind)
        last = first + counts - 1
        tp = last + 1
        fp = _cumulative_counts(self.left, self.n_in + 1)[last]
        return float((_f64(counts) * (_f64(tp) / _f64(tp + fp))).sum()) / self.n_in

    def fpr_at_tpr_in(self, tpr: float) -> float:
        k = _smallest_count(tpr, self.n_in)
        threshold = self.ind[k - 1 : k]  # the k-th smallest ID score
        return int(_searchsorted(self.ood, threshold, right=True)[0]) / self.n_ood

    def fpr_at_tpr_out(self, tpr: float) -> float:
        k = _smallest_count(tpr, self.n_ood)
        threshold = self.ood[self.n_ood - k : self.n_ood - k + 1]  # the k-th largest OOD score
        return (self.n_in - int(_searchsorted(self.ind, threshold, right=False)[0])) / self.n_in


# ------------------------------------------------------------------------ public metrics


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve. **Positive class: OOD / anomaly** (score as is).

    ``AUROC = (#{(o, i) : s_o > s_i} + 0.5 * #{(o, i) : s_o == s_i}) / (n_ood * n_in)``
    over all pairs of an OOD sample ``o`` and an in-distribution sample ``i``: the
    probability that a random OOD sample scores higher than a random in-distribution one,
    ties counting one half. Equals ``sklearn.metrics.roc_auc_score(is_ood, scores)``
    (to 1e-9, exact tie handling).

    Hand-written for speed and for exactness on GPU tensors (see the module docstring):
    the two classes are sorted separately and counted with ``searchsorted`` in int64.

    Args:
        scores: ``(N,)`` real scores, higher = more anomalous, finite.
        labels: ``(N,)`` integer labels (``-1`` = OOD, ``>= 0`` = in-distribution) or
            booleans (``True`` = OOD). Both classes must be present.

    Returns:
        AUROC in ``[0, 1]``; 0.5 is chance.

    Raises:
        DataError: on empty, non-1-D, non-finite or mismatched inputs, or one class absent.
    """
    return _Sorted(scores, labels).auroc()


def aupr_out(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision with **OOD as the positive class**, ranked by ``scores`` as is.

    ``AP = sum_t (R_t - R_{t-1}) * P_t`` over the distinct score thresholds ``t`` (samples
    with score ``>= t`` are flagged), step-wise with no interpolation, where ``P_t`` and
    ``R_t`` are the precision and recall of OOD detection at ``t``. Tied scores form one
    threshold. Equals ``sklearn.metrics.average_precision_score(is_ood, scores)`` (to 1e-9).

    Hand-written for speed and exactness on GPU tensors (see the module docstring).

    Args:
        scores: ``(N,)`` real scores, higher = more anomalous, finite.
        labels: ``(N,)`` integer labels (``-1`` = OOD) or booleans (``True`` = OOD); both
            classes must be present.

    Returns:
        AUPR-Out in ``(0, 1]``; chance level is the share of OOD samples.

    Raises:
        DataError: on empty, non-1-D, non-finite or mismatched inputs, or one class absent.
    """
    return _Sorted(scores, labels).aupr_out()


def aupr_in(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision with **in-distribution as the positive class**, ranked by ``-scores``.

    Same step-wise formula as :func:`aupr_out` (``AP = sum_t (R_t - R_{t-1}) * P_t`` over
    distinct thresholds, no interpolation) with the roles swapped: samples with score
    ``<= t`` are accepted as in-distribution. Equals
    ``sklearn.metrics.average_precision_score(~is_ood, -scores)`` (to 1e-9).

    Hand-written for speed and exactness on GPU tensors (see the module docstring).

    Args:
        scores: ``(N,)`` real scores, higher = more anomalous, finite.
        labels: ``(N,)`` integer labels (``-1`` = OOD) or booleans (``True`` = OOD); both
            classes must be present.

    Returns:
        AUPR-In in ``(0, 1]``; chance level is the share of in-distribution samples.

    Raises:
        DataError: on empty, non-1-D, non-finite or mismatched inputs, or one class absent.
    """
    return _Sorted(scores, labels).aupr_in()


def fpr_at_tpr_in(scores: ArrayLike, labels: ArrayLike, tpr: float = 0.95) -> float:
    """FPR at a TPR with **in-distribution as the positive class** (OpenOOD's convention).

    A sample is *accepted* as in-distribution when its score is ``<= t``. On the ROC curve
    of ``(~is_ood, -scores)`` (one point per distinct threshold, as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)`` gives it), take the first
    point whose TPR - the share of in-distribution samples accepted - is ``>= tpr``; its
    threshold is the ``k``-th smallest in-distribution score, ``k`` the smallest count with
    ``k / n_in >= tpr``. Return the FPR there: the share of OOD samples also accepted,
    ``#{OOD : s <= t} / n_ood``. Lower is better.

    Hand-written for speed and exactness on GPU tensors: the threshold is found by
    selection (``partition`` / ``kthvalue``), in linear time.

    Args:
        scores: ``(N,)`` real scores, higher = more anomalous, finite.
        labels: ``(N,)`` integer labels (``-1`` = OOD) or booleans (``True`` = OOD); both
            classes must be present.
        tpr: target true-positive rate in ``(0, 1]``.

    Returns:
        The false-positive rate in ``[0, 1]``.

    Raises:
        DataError: on bad inputs (see :func:`auroc`) or ``tpr`` outside ``(0, 1]``.
    """
    target = _tpr(tpr)
    ood, ind = _split_unsorted(scores, labels)
    k = _smallest_count(target, int(ind.shape[0]))
    threshold = _kth_smallest(ind, k)
    return _count(ood <= threshold) / int(ood.shape[0])


def fpr_at_tpr_out(scores: ArrayLike, labels: ArrayLike, tpr: float = 0.95) -> float:
    """FPR at a TPR with **OOD as the positive class** (pytorch-ood's convention).

    A sample is *flagged* as OOD when its score is ``>= t``. On the ROC curve of
    ``(is_ood, scores)`` (one point per distinct threshold, as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)`` gives it), take the first
    point whose TPR - the share of OOD samples flagged - is ``>= tpr``; its threshold is
    the ``k``-th largest OOD score, ``k`` the smallest count with ``k / n_ood >= tpr``.
    Return the FPR there: the share of in-distribution samples also flagged,
    ``#{ID : s >= t} / n_in``. Lower is better.

    Hand-written for speed and exactness on GPU tensors: the threshold is found by
    selection (``partition`` / ``kthvalue``), in linear time.

    Args:
        scores: ``(N,)`` real scores, higher = more anomalous, finite.
        labels: ``(N,)`` integer labels (``-1`` = OOD) or booleans (``True`` = OOD); both
            classes must be present.
        tpr: target true-positive rate in ``(0, 1]``.

    Returns:
        The false-positive rate in ``[0, 1]``.

    Raises:
        DataError: on bad inputs (see :func:`auroc`) or ``tpr`` outside ``(0, 1]``.
    """
    target = _tpr(tpr)
    ood, ind = _split_unsorted(scores, labels)
    n_ood = int(ood.shape[0])
    k = _smallest_count(target, n_ood)
    threshold = _kth_smallest(ood, n_ood - k + 1)
    return _count(ind >= threshold) / int(ind.shape[0])


def ood_metrics(scores: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Every detection metric from one sort of the scores.

    Keys (see :data:`OOD_METRIC_KEYS`), each equal to the function of the same meaning:

    * ``"auroc"`` - :func:`auroc`, positive class OOD;
    * ``"aupr_in"`` - :func:`aupr_in`, positive class in-distribution (ranked by ``-scores``);
    * ``"aupr_out"`` - :func:`aupr_out`, positive class OOD;
    * ``"fpr_at_95_tpr_in"`` - :func:`fpr_at_tpr_in` at ``tpr=0.95``, positive class
      in-distribution (OpenOOD's FPR@95);
    * ``"fpr_at_95_tpr_out"`` - :func:`fpr_at_tpr_out` at ``tpr=0.95``, positive class
      OOD (pytorch-ood's FPR@95).

    The two classes are sorted once and one ``searchsorted`` gives the cross-counts all
    metrics derive from, so this costs little more than :func:`auroc` alone.

    Args:
        scores: ``(N,)`` real scores, higher = more anomalous, finite.
        labels: ``(N,)`` integer labels (``-1`` = OOD) or booleans (``True`` = OOD); both
            classes must be present.

    Returns:
        A dict of Python floats with exactly the keys above.

    Raises:
        DataError: on empty, non-1-D, non-finite or mismatched inputs, or one class absent.
    """
    s = _Sorted(scores, labels)
    return {
        "auroc": s.auroc(),
        "aupr_in": s.aupr_in(),
        "aupr_out": s.aupr_out(),
        "fpr_at_95_tpr_in": s.fpr_at_tpr_in(0.95),
        "fpr_at_95_tpr_out": s.fpr_at_tpr_out(0.95),
    }


# ------------------------------------------------------------------ classification metrics


def _as_tensor(x: object, name: str) -> torch.Tensor:
    """``x`` as a tensor of real numbers.

    NumPy strings, objects and dates are refused (torch has no such dtypes:
    ``torch.from_numpy`` raises a ``TypeError``), and so are complex numbers: no metric
    here orders them or reads class ids from them, and torch would drop the imaginary
    part with only a warning.
    """
    x = _check_array(x, name)
    if _kind(x) == "other":
        raise DataError(f"{name} must be a numeric array of real numbers (float, int or bool), got dtype {x.dtype}")
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x.detach()


def _class_ids(x: torch.Tensor, name: str) -> None:
    if x.dtype == torch.bool or x.is_floating_point():
        raise DataError(f"{name} must be integer class ids, got dtype {x.dtype}")


def accuracy(predictions_or_logits: ArrayLike, labels: ArrayLike) -> float:
    """Closed-set classification accuracy: ``mean(prediction == label)``.

    There is no positive class: every sample counts, and every label must be a known class
    (``>= 0``). Nothing is ignored implicitly - drop unknown (``-1``) samples yourself, or
    use :func:`confusion_matrix` for open-set results. A predicted ``-1`` (rejected) counts
    as wrong.

    Args:
        predictions_or_logits: ``(N,)`` integer predicted class ids, or ``(N, K)`` real
            logits / scores whose argmax over classes is the prediction.
        labels: ``(N,)`` integer true classes, all ``>= 0`` (and ``< K`` for logits).

    Returns:
        The share of correct predictions in ``[0, 1]``.

    Raises:
        DataError: on shapes or dtypes other than the above, ``N == 0``, or a label ``< 0``.
    """
    pred = _as_tensor(predictions_or_logits, "predictions_or_logits")
    target = _as_tensor(labels, "labels")
    if target.ndim != 1:
        raise DataError(f"labels must be 1-D with shape (N,), got shape {_shape(target)}")
    _class_ids(target, "labels")
    if pred.ndim == 2:
        if pred.dtype == torch.bool:
            raise DataError(
                f"predictions_or_logits as (N, K) logits must be real numbers, not booleans, got dtype {pred.dtype}"
            )
        if pred.shape[1] == 0:
            raise DataError(f"predictions_or_logits as (N, K) logits needs K >= 1, got shape {_shape(pred)}")
        num_classes: int | None = int(pred.shape[1])
        pred = pred.argmax(dim=1)
    elif pred.ndim == 1:
        _class_ids(pred, "predictions_or_logits (1-D class ids)")
        num_classes = None
    else:
        raise DataError(f"predictions_or_logits must be (N,) class ids or (N, K) logits, got shape {_shape(pred)}")
    if pred.shape[0] != target.shape[0]:
        raise DataError(
            f"predictions_or_logits and labels must have the same length N, got {pred.shape[0]} and {target.shape[0]}"
        )
    if target.shape[0] == 0:
        raise DataError("labels must hold at least one sample, got N = 0 (accuracy of an empty set is undefined)")
    low, high = int(target.min()), int(target.max())
    if low < 0:
        raise DataError(
            f"labels must be known classes >= 0 for closed-set accuracy, got {low} "
            "(-1 = unknown); drop unknown samples first"
        )
    if num_classes is not None and high >= num_classes:
        raise DataError(f"labels must be < K = {num_classes} (the logits' classes), got {high}")
    correct = pred.to(target.device) == target
    return _count(correct) / int(target.shape[0])


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int) -> torch.Tensor:
    """Open-set confusion matrix with an extra "unknown" class.

    ``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``: **rows = true,
    columns = predicted**. Known classes are ``0..K-1``; ``-1`` (unknown / OOD / rejected),
    allowed in both ``pred`` and ``target``, is mapped to index ``K``, the last row and
    column. There is no positive class. Equals
    ``sklearn.metrics.confusion_matrix(target', pred', labels=range(K + 1))`` with ``-1``
    replaced by ``K``.

    Args:
        pred: ``(N,)`` integer predicted class ids in ``-1..K-1``.
        target: ``(N,)`` integer true class ids in ``-1..K-1``.
        num_classes: the number ``K >= 1`` of known classes.

    Returns:
        An int64 tensor of shape ``(K + 1, K + 1)`` on ``target``'s device (all zeros for
        ``N == 0``).

    Raises:
        DataError: on shapes or dtypes other than the above, or a value outside ``-1..K-1``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise DataError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    k = int(num_classes)
    p, t = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    for name, x in (("pred", p), ("target", t)):
        if x.ndim != 1:
            raise DataError(f"{name} must be 1-D with shape (N,), got shape {_shape(x)}")
        _class_ids(x, name)
    if p.shape[0] != t.shape[0]:
        raise DataError(f"pred and target must have the same length N, got {p.shape[0]} and {t.shape[0]}")
    for name, x in (("pred", p), ("target", t)):
        if x.shape[0] and (int(x.min()) < -1 or int(x.max()) >= k):
            raise DataError(
                f"{name} must hold class ids in -1..{k - 1} (num_classes = {k}), "
                f"got values in [{int(x.min())}, {int(x.max())}]"
            )
    t = t.long()
    p = p.to(t.device).long()
    t = torch.where(t < 0, k, t)
    p = torch.where(p < 0, k, p)
    return torch.bincount(t * (k + 1) + p, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)


def oscr(known_scores: ArrayLike, known_correct: ArrayLike, unknown_scores: ArrayLike) -> float:
    """Open-Set Classification Rate: the area under the CCR-vs-FPR curve.

    Dhamija et al., "Reducing Network Agnostophobia", NeurIPS 2018, as used by Miller et
    al. (WACV 2021) to rank open-set methods. A sample is *accepted* when its score is
    ``<= t``. For each threshold ``t``, the correct classification rate
    ``CCR(t) = #{known, correctly classified, accepted} / #known`` and the false positive
    rate ``FPR(t) = #{unknown, accepted} / #unknown``; the curve runs from ``(0, 0)``
    through one point per distinct score (tied scores form one threshold) to
    ``(1, closed-set accuracy)``, and the area is taken with the trapezoid rule. The
    positive class is "known and correctly classified"; ``OSCR <= accuracy`` and a
    perfect open-set classifier reaches its closed-set accuracy.

    Args:
        known_scores: ``(N,)`` scores of known-class test samples (higher = unknown).
        known_correct: ``(N,)`` booleans, whether each known sample's class is right.
        unknown_scores: ``(M,)`` scores of unknown test samples.

    Raises:
        DataError: empty inputs, non-numeric or complex dtypes, non-finite scores, or
            mismatched lengths.
    """
    known = _as_tensor(known_scores, "known_scores").double().cpu()
    unknown = _as_tensor(unknown_scores, "unknown_scores").double().cpu()
    correct = _as_tensor(known_correct, "known_correct").cpu()
    for name, x in (("known_scores", known), ("unknown_scores", unknown)):
        if x.ndim != 1 or x.shape[0] == 0:
            raise DataError(f"{name} must be a non-empty 1-D array, got shape {_shape(x)}")
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"{name} must be finite, got NaN or infinite values")
    if correct.dtype != torch.bool or correct.shape != known.shape:
        raise DataError(
            f"known_correct must be booleans of the same shape as known_scores {_shape(known)}, "
            f"got {correct.dtype} {_shape(correct)}"
        )
    scores = torch.cat([known, unknown])
    hits = torch.cat([correct.double(), torch.zeros_like(unknown)])
    false = torch.cat([torch.zeros_like(known), torch.ones_like(unknown)])
    order = torch.argsort(scores, stable=True)
    ordered = scores[order]
    ends = torch.ones_like(ordered, dtype=torch.bool)  # last index of each run of ties
    ends[:-1] = ordered[1:] != ordered[:-1]
    ccr = torch.cat([torch.zeros(1, dtype=torch.float64), hits[order].cumsum(0)[ends] / known.shape[0]])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), false[order].cumsum(0)[ends] / unknown.shape[0]])
    return float(torch.trapezoid(ccr, fpr))


# ----------------------------------------------------------------------------- streaming


class OODMetrics:
    """Streaming :func:`ood_metrics`: ``update`` with batches, ``compute`` at the end.

    Positive classes are those of :func:`ood_metrics` (OOD for ``auroc``, ``aupr_out`` and
    ``fpr_at_95_tpr_out``; in-distribution for ``aupr_in`` and ``fpr_at_95_tpr_in``).
    Each batch is validated on ``update`` and stored - scores as given (detached and
    copied, so later in-place changes to the caller's buffer do not leak in) and labels as
    a boolean ``is_ood`` - on its own device; ``compute`` concatenates them once, so the
    result equals :func:`ood_metrics` over all batches exactly.

    Example:
        >>> metric = OODMetrics()
        >>> for scores, labels in batches:  # doctest: +SKIP
        ...     metric.update(scores, labels)
        >>> metric.compute()["auroc"]  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._is_ood: list[torch.Tensor] = []

    def __len__(self) -> int:
        """The number of samples seen since the last :meth:`reset`."""
        return sum(int(s.shape[0]) for s in self._scores)

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add one batch.

        Args:
            scores: ``(B,)`` real scores, higher = more anomalous, finite.
            labels: ``(B,)`` integer labels (``-1`` = OOD, ``>= 0`` = in-distribution) or
                booleans (``True`` = OOD). A batch may hold one class only.

        Raises:
            DataError: on a malformed batch, or a batch on another device than the first.
        """
        s = _as_tensor(scores, "scores")
        _scores(s, allow_empty=True)  # validates shape, dtype and finiteness
        is_ood = as_is_ood(labels)
        if is_ood.shape[0] != s.shape[0]:
            raise DataError(f"labels must have one entry per score ({s.shape[0]} scores), got {is_ood.shape[0]} labels")
        if self._scores and s.device != self._scores[0].device:
            raise DataError(
                f"scores must stay on one device across batches: first batch on {self._scores[0].device}, "
                f"got {s.device}"
            )
        self._scores.append(s.clone())
        self._is_ood.append(is_ood.to(s.device, copy=True))

    def compute(self) -> dict[str, float]:
        """The metrics of :func:`ood_metrics` over every batch since the last reset.

        Returns:
            A dict of Python floats with the keys of :data:`OOD_METRIC_KEYS`.

        Raises:
            DataError: before any ``update``, or when one class is absent from all batches.
        """
        if not self._scores:
            raise DataError("OODMetrics.compute() needs at least one update(scores, labels) first, got none")
        return ood_metrics(torch.cat(self._scores), torch.cat(self._is_ood))

    def reset(self) -> None:
        """Forget every batch."""
        self._scores.clear()
        self._is_ood.clear()
