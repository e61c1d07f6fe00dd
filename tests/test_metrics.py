"""encircle.metrics against scikit-learn (to 1e-9, heavy ties included), by hand, and on bad input."""

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from encircle import metrics
from encircle.errors import DataError, EncircleError
from encircle.metrics import (
    OOD_METRIC_KEYS,
    OODMetrics,
    accuracy,
    as_is_ood,
    aupr_in,
    aupr_out,
    auroc,
    confusion_matrix,
    fpr_at_tpr_in,
    fpr_at_tpr_out,
    ood_metrics,
)

TPRS = (0.95, 0.5, 0.8, 1.0, 1e-9, 0.3333333333333333)


@st.composite
def scored(draw, max_size=80):
    """``(scores, is_ood)`` as NumPy, with both classes, often with very few distinct values."""
    n = draw(st.integers(2, max_size))
    distinct = draw(st.sampled_from([1, 2, 3, 5, 20, 10**6]))
    values = np.array(draw(st.lists(st.integers(0, distinct - 1), min_size=n, max_size=n)), dtype=np.float64)
    is_ood = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    flip = draw(st.integers(0, n - 1))  # make sure both classes are present
    if is_ood.all() or not is_ood.any():
        is_ood[flip] = not is_ood[flip]
    scale = draw(st.sampled_from([1.0, 0.1, -3.7, 1e-3]))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    return (values * scale + draw(st.sampled_from([0.0, 5.0]))).astype(dtype), is_ood


def as_inputs(data, label_format, container):
    """The same data as the functions accept it: int labels (-1 = OOD) or bools; torch or NumPy."""
    scores, is_ood = data
    if label_format == "int":
        rng = np.random.default_rng(len(scores))
        labels = np.where(is_ood, -1, rng.integers(0, 4, size=len(scores))).astype(np.int64)
    else:
        labels = is_ood
    if container == "torch":
        return torch.from_numpy(scores), torch.from_numpy(labels)
    return scores, labels


def sk_fpr_at_tpr(y_true, y_score, tpr):
    """FPR at the first ROC point (drop_intermediate=False) whose TPR >= tpr."""
    fpr, tpr_curve, _ = roc_curve(y_true, y_score, drop_intermediate=False)
    return fpr[np.argmax(tpr_curve >= tpr)]


formats = st.sampled_from(["int", "bool"])
containers = st.sampled_from(["torch", "numpy"])


@settings(max_examples=250, deadline=None)
@given(scored(), formats, containers)
def test_auroc_and_aupr_match_sklearn(data, label_format, container):
    s, y = data
    scores, labels = as_inputs(data, label_format, container)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert aupr_out(scores, labels) == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert aupr_in(scores, labels) == pytest.approx(average_precision_score(~y, -s), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(scored(max_size=600), formats)
def test_moderate_sizes_match_sklearn(data, label_format):
    s, y = data
    scores, labels = as_inputs(data, label_format, "torch")
    result = ood_metrics(scores, labels)
    assert result["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert result["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert result["aupr_in"] == pytest.approx(average_precision_score(~y, -s), abs=1e-9)
    assert result["fpr_at_95_tpr_out"] == sk_fpr_at_tpr(y, s, 0.95)
    assert result["fpr_at_95_tpr_in"] == sk_fpr_at_tpr(~y, -s, 0.95)


@settings(max_examples=200, deadline=None)
@given(scored(), formats, containers, st.floats(0.0, 1.0, exclude_min=True))
def test_fpr_at_tpr_matches_sklearn_roc_curve(data, label_format, container, drawn_tpr):
    s, y = data
    scores, labels = as_inputs(data, label_format, container)
    for tpr in (*TPRS, drawn_tpr):
        # FPR values are ratios of exact counts: equal to sklearn's, not just close
        assert fpr_at_tpr_out(scores, labels, tpr) == sk_fpr_at_tpr(y, s, tpr)
        assert fpr_at_tpr_in(scores, labels, tpr) == sk_fpr_at_tpr(~y, -s, tpr)


@settings(max_examples=100, deadline=None)
@given(scored(), formats, containers)
def test_ood_metrics_equals_the_single_functions(data, label_format, container):
    scores, labels = as_inputs(data, label_format, container)
    result = ood_metrics(scores, labels)
    assert tuple(result) == OOD_METRIC_KEYS
    assert all(type(v) is float for v in result.values())
    assert result == {
        "auroc": auroc(scores, labels),
        "aupr_in": aupr_in(scores, labels),
        "aupr_out": aupr_out(scores, labels),
        "fpr_at_95_tpr_in": fpr_at_tpr_in(scores, labels),
        "fpr_at_95_tpr_out": fpr_at_tpr_out(scores, labels),
    }


@settings(max_examples=80, deadline=None)
@given(scored(max_size=200), formats, st.floats(0.0, 1.0, exclude_min=True))
def test_torch_backend_matches_sklearn(data, label_format, tpr):
    """The code path GPU tensors take (torch sort/searchsorted/bincount), run here on CPU tensors."""
    s, y = data
    scores, labels = as_inputs(data, label_format, "torch")
    with mock.patch.object(metrics, "_backend", lambda x: torch.as_tensor(x).detach()):
        assert isinstance(metrics._Sorted(scores, labels).ood, torch.Tensor)
        result = ood_metrics(scores, labels)
        fpr_in, fpr_out = fpr_at_tpr_in(scores, labels, tpr), fpr_at_tpr_out(scores, labels, tpr)
    assert result == pytest.approx(ood_metrics(scores, labels), abs=1e-12)  # as the NumPy path (sum order aside)
    assert result["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert result["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert result["aupr_in"] == pytest.approx(average_precision_score(~y, -s), abs=1e-9)
    assert fpr_out == sk_fpr_at_tpr(y, s, tpr)
    assert fpr_in == sk_fpr_at_tpr(~y, -s, tpr)


@pytest.mark.parametrize("share_ood", [0.2, 0.5, 0.8])
def test_two_thread_path_matches_sklearn(share_ood):
    """Big CPU inputs sort and search on two threads; force that path on a small input."""
    rng = np.random.default_rng(7)
    y = rng.random(5000) < share_ood
    s = (rng.normal(size=5000) + y).round(1)
    with mock.patch.object(metrics, "_PARALLEL_MIN", 0):
        assert metrics._Sorted(s, y).parallel == (torch.get_num_threads() > 1)
        result = ood_metrics(s, y)
    assert result == ood_metrics(s, y)
    assert result["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert result["aupr_in"] == pytest.approx(average_precision_score(~y, -s), abs=1e-9)


def test_hand_worked_example():
    # OOD scores 3, 1; in-distribution scores 2, 0.
    s = torch.tensor([3.0, 1.0, 2.0, 0.0])
    y = torch.tensor([-1, -1, 0, 1])
    # pairs (ood, id): 3>2, 3>0, 1<2, 1>0 -> 3 of 4
    assert auroc(s, y) == 0.75
    # flag by descending score: 3 OOD (P=1, R=1/2), 2 ID, 1 OOD (P=2/3, R=1) -> 1/2 + 1/3
    assert aupr_out(s, y) == pytest.approx(0.5 + 1 / 3, abs=1e-15)
    # accept by ascending score: 0 ID (P=1, R=1/2), 1 OOD, 2 ID (P=2/3, R=1) -> 1/2 + 1/3
    assert aupr_in(s, y) == pytest.approx(0.5 + 1 / 3, abs=1e-15)
    # 95% of two OOD samples needs both: t = 1 flags the ID score 2 (not 0) -> FPR 1/2
    assert fpr_at_tpr_out(s, y) == 0.5
    # 50% of the OOD samples: t = 3 flags no ID sample -> FPR 0
    assert fpr_at_tpr_out(s, y, tpr=0.5) == 0.0
    # 95% of two ID samples needs both: t = 2 accepts the OOD score 1 -> FPR 1/2
    assert fpr_at_tpr_in(s, y) == 0.5
    # 50% of the ID samples: t = 0 accepts no OOD sample -> FPR 0
    assert fpr_at_tpr_in(s, y, tpr=0.5) == 0.0


def test_hand_worked_ties():
    # a tie between an OOD and an ID score counts one half
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([-1, 0])) == 0.5
    # OOD {2, 1}, ID {1, 1, 0}: pairs with OOD 2: 3 wins; OOD 1: 2 ties + 1 win -> (3 + 1 + 1) / 6
    s = torch.tensor([2.0, 1.0, 1.0, 1.0, 0.0])
    y = torch.tensor([True, True, False, False, False])
    assert auroc(s, y) == 5 / 6
    # thresholds 2 (TP 1, FP 0: P=1, R=1/2) and 1 (TP 2, FP 2: P=1/2, R=1) -> 1/2 + 1/4
    assert aupr_out(s, y) == 0.75
    # 100% of OOD needs t = 1, which flags both tied ID samples -> FPR 2/3
    assert fpr_at_tpr_out(s, y, tpr=1.0) == 2 / 3
    # all scores equal: AUROC 1/2, AP = share of positives
    assert auroc(np.zeros(4), np.array([-1, 0, 0, 0])) == 0.5
    assert aupr_out(np.zeros(4), np.array([-1, 0, 0, 0])) == 0.25
    assert aupr_in(np.zeros(4), np.array([-1, 0, 0, 0])) == 0.75


def test_perfect_and_reversed_separation():
    y = np.array([0, 0, 0, -1, -1])
    good = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert ood_metrics(good, y) == {
        "auroc": 1.0,
        "aupr_in": 1.0,
        "aupr_out": 1.0,
        "fpr_at_95_tpr_in": 0.0,
        "fpr_at_95_tpr_out": 0.0,
    }
    assert auroc(-good, y) == 0.0
    assert fpr_at_tpr_out(-good, y) == 1.0 and fpr_at_tpr_in(-good, y) == 1.0


def test_float32_and_float64_agree():
    rng = np.random.default_rng(1)
    s = rng.normal(size=3000)
    y = rng.random(3000) < 0.3
    s[y] += 1
    # values exactly representable in float32: identical results
    exact = s.astype(np.float32).astype(np.float64)
    assert ood_metrics(exact.astype(np.float32), y) == ood_metrics(exact, y)
    assert ood_metrics(torch.from_numpy(exact).float(), y) == ood_metrics(torch.from_numpy(exact), y)
    # arbitrary float64 values rounded to float32: only neighbours can swap
    assert ood_metrics(s.astype(np.float32), y) == pytest.approx(ood_metrics(s, y), abs=1e-6)


def test_other_score_dtypes():
    y = torch.tensor([-1, -1, 0, 0, 0])
    ints = torch.tensor([3, 1, 1, 0, 2])
    reference = ood_metrics(ints.double(), y)
    assert ood_metrics(ints, y) == reference
    assert ood_metrics(ints.numpy().astype(np.uint8), y.numpy()) == reference
    assert ood_metrics(ints.half(), y) == reference
    assert ood_metrics(ints.bfloat16(), y) == reference
    assert auroc(torch.tensor([True, False, False]), torch.tensor([-1, 0, 0])) == 1.0
    with_grad = torch.tensor([0.3, 0.1, 0.2], requires_grad=True)
    assert auroc(with_grad, torch.tensor([-1, 0, 0])) == 1.0


def test_non_contiguous_inputs():
    rng = np.random.default_rng(5)
    s = torch.from_numpy(rng.normal(size=(400, 2)))
    y = torch.from_numpy(rng.random((400, 2)) < 0.4)
    assert ood_metrics(s[:, 1], y[:, 1]) == ood_metrics(s[:, 1].contiguous(), y[:, 1].contiguous())
    assert auroc(s.numpy()[::-2, 0], y.numpy()[::-2, 0]) == auroc(s[:, 0].flip(0)[::2], y[:, 0].flip(0)[::2])


def test_large_tie_heavy_input_matches_sklearn():
    rng = np.random.default_rng(2)
    n = 200_000
    y = rng.random(n) < 0.3
    s = (rng.normal(size=n) + y).astype(np.float32).round(2)  # about 800 distinct values
    result = ood_metrics(torch.from_numpy(s), torch.from_numpy(y))
    assert result["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert result["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert result["aupr_in"] == pytest.approx(average_precision_score(~y, -s), abs=1e-9)
    assert result["fpr_at_95_tpr_out"] == sk_fpr_at_tpr(y, s, 0.95)
    assert result["fpr_at_95_tpr_in"] == sk_fpr_at_tpr(~y, -s, 0.95)


def test_as_is_ood():
    assert as_is_ood(torch.tensor([-1, 0, 3])).tolist() == [True, False, False]
    assert as_is_ood(np.array([True, False])).tolist() == [True, False]
    assert as_is_ood(np.array([-1, 2], dtype=np.int32)).dtype == torch.bool


def test_streaming_equals_functional():
    rng = np.random.default_rng(3)
    s = torch.from_numpy(rng.normal(size=300).astype(np.float32).round(1))
    labels = torch.from_numpy(rng.integers(-1, 3, size=300))
    metric = OODMetrics()
    metric.update(s[:100], labels[:100])
    metric.update(s[100:150].numpy(), (labels[100:150] < 0).numpy())  # NumPy, bool labels
    metric.update(s[150:150], labels[150:150])  # an empty batch is fine
    buffer = s[150:].clone()
    metric.update(buffer, labels[150:] < 0)
    buffer.fill_(0.0)  # the caller reusing its buffer does not change what was stored
    assert len(metric) == 300
    assert metric.compute() == ood_metrics(s, labels)
    assert tuple(metric.compute()) == OOD_METRIC_KEYS
    metric.reset()
    assert len(metric) == 0
    with pytest.raises(DataError, match=r"compute\(\) needs at least one update"):
        metric.compute()
    metric.update(s[:10], torch.zeros(10, dtype=torch.int64))  # one class per batch is fine ...
    with pytest.raises(DataError, match="no OOD"):  # ... but not over all batches
        metric.compute()


def test_accuracy_against_sklearn():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(500, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=500)
    expected = accuracy_score(labels, logits.argmax(1))
    assert accuracy(logits, labels) == expected
    assert accuracy(torch.from_numpy(logits), torch.from_numpy(labels)) == expected
    assert accuracy(torch.from_numpy(logits.argmax(1)), torch.from_numpy(labels)) == expected
    assert accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])) == 0.75
    assert accuracy(torch.tensor([-1, 1]), torch.tensor([0, 1])) == 0.5  # a rejection counts as wrong


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.lists(st.tuples(st.integers(-1, 5), st.integers(-1, 5)), max_size=60))
def test_confusion_matrix_against_sklearn(k, pairs):
    pairs = [(min(p, k - 1), min(t, k - 1)) for p, t in pairs]
    pred = torch.tensor([p for p, _ in pairs], dtype=torch.int64)
    target = torch.tensor([t for _, t in pairs], dtype=torch.int64)
    cm = confusion_matrix(pred, target, num_classes=k)
    assert cm.dtype == torch.int64 and cm.shape == (k + 1, k + 1)
    if pairs:
        expected = sk_confusion_matrix(
            np.where(target < 0, k, target), np.where(pred < 0, k, pred), labels=list(range(k + 1))
        )
        assert np.array_equal(cm.numpy(), expected)
    else:
        assert int(cm.sum()) == 0


def test_confusion_matrix_by_hand():
    pred = np.array([0, 1, -1, 2, -1, 0], dtype=np.int32)
    target = np.array([0, 1, 2, 2, -1, -1])
    cm = confusion_matrix(pred, target, num_classes=3)
    # rows = true, columns = predicted, last row/column = unknown (-1)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]]


s2 = torch.tensor([0.1, 0.2])
y2 = torch.tensor([0, -1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: auroc([0.1, 0.2], y2), "scores must be a torch.Tensor or numpy.ndarray, got list"),
        (lambda: auroc(s2, [0, -1]), "labels must be a torch.Tensor or numpy.ndarray, got list"),
        (lambda: auroc(s2, torch.tensor([0, 0])), r"labels must contain both classes.*no OOD \(label -1 / True\)"),
        (lambda: aupr_in(s2, torch.tensor([True, True])), "labels must contain both classes.*no in-distribution"),
        (lambda: auroc(torch.tensor([0.1, float("nan")]), y2), r"scores must be finite, got 1 NaN or infinite"),
        (lambda: aupr_out(np.array([np.inf, 0.0]), y2.numpy()), "scores must be finite"),
        (lambda: ood_metrics(torch.tensor([-np.inf, 0.0]), y2), "scores must be finite"),
        (lambda: auroc(torch.tensor([0.1, 0.2, 0.3]), y2), r"one entry per score \(3 scores\), got 2 labels"),
        (lambda: fpr_at_tpr_in(s2, torch.tensor([0, -1, 0])), r"one entry per score \(2 scores\), got 3"),
        (lambda: auroc(torch.tensor([]), torch.tensor([], dtype=torch.int64)), "scores must hold at least one"),
        (lambda: ood_metrics(np.array([]), np.array([], dtype=bool)), "scores must hold at least one"),
        (lambda: auroc(torch.zeros(2, 2), y2), r"scores must be 1-D with shape \(N,\), got shape \(2, 2\)"),
        (lambda: auroc(torch.tensor(0.5), y2), r"scores must be 1-D .* got shape \(\)"),
        (lambda: auroc(s2, y2.reshape(2, 1)), r"labels must be 1-D .* got shape \(2, 1\)"),
        (lambda: auroc(s2, torch.tensor([0.0, 1.0])), "labels must be integer class ids .* got dtype torch.float32"),
        (lambda: auroc(s2, torch.tensor([0, -2])), r"labels must be -1 \(OOD\) or >= 0 .* got -2"),
        (lambda: auroc(torch.tensor([1j, 2j]), y2), "scores must be real numbers"),
        (lambda: fpr_at_tpr_in(s2, y2, 0.0), r"tpr must be in \(0, 1\], got 0.0"),
        (lambda: fpr_at_tpr_in(s2, y2, -0.5), r"tpr must be in \(0, 1\], got -0.5"),
        (lambda: fpr_at_tpr_out(s2, y2, 1.5), r"tpr must be in \(0, 1\], got 1.5"),
        (lambda: fpr_at_tpr_out(s2, y2, float("nan")), r"tpr must be in \(0, 1\], got nan"),
        (lambda: fpr_at_tpr_out(s2, y2, "0.95"), r"tpr must be a number in \(0, 1\], got str"),
        (lambda: accuracy(torch.tensor([0, 1]), y2), "labels must be known classes >= 0 .* got -1"),
        (lambda: accuracy(torch.tensor([0, 1]), torch.tensor([0])), "same length N, got 2 and 1"),
        (lambda: accuracy(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)), "N = 0"),
        (lambda: accuracy(torch.zeros(2, 3, 4), torch.tensor([0, 1])), r"\(N,\) class ids or \(N, K\) logits"),
        (lambda: accuracy(torch.tensor([0.0, 1.0]), torch.tensor([0, 1])), "class ids, got dtype torch.float32"),
        (lambda: accuracy(torch.zeros(2, 3), torch.tensor([0, 3])), r"labels must be < K = 3 .* got 3"),
        (lambda: accuracy(torch.tensor([0, 1]), torch.tensor([0.0, 1.0])), "labels must be integer class ids"),
        (lambda: confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3), r"pred must hold .* -1..2"),
        (lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([-2, 1]), 3), r"target must hold .* \[-2, 1\]"),
        (
            lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 0),
            "num_classes must be an integer >= 1",
        ),
        (lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 2.0), "num_classes must be an integer"),
        (lambda: confusion_matrix(torch.tensor([0]), torch.tensor([0, 1]), 2), "same length N, got 1 and 2"),
        (lambda: confusion_matrix(torch.zeros(2, 1).long(), torch.tensor([0, 1]), 2), "pred must be 1-D"),
        (lambda: confusion_matrix(torch.tensor([0.0]), torch.tensor([0]), 2), "pred must be integer class ids"),
        (lambda: OODMetrics().update(torch.zeros(2, 2), y2), "scores must be 1-D"),
        (lambda: OODMetrics().update(s2, torch.tensor([0])), r"one entry per score \(2 scores\), got 1"),
        (lambda: OODMetrics().update(torch.tensor([float("nan")]), torch.tensor([0])), "scores must be finite"),
        (lambda: OODMetrics().update(s2, torch.tensor([0, -3])), "got -3"),
        (
            lambda: accuracy(np.array([2**64 - 1, 1], np.uint64), np.array([0, 1])),
            r"predictions_or_logits must be integers below 2\*\*63, got larger uint64 values",
        ),
        (
            lambda: auroc(s2, torch.tensor([2**63, 0], dtype=torch.uint64)),
            r"labels must be integers below 2\*\*63, got larger torch.uint64 values",
        ),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(DataError, match=message) as info:
        call()
    assert isinstance(info.value, EncircleError)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    for s in (rng.normal(size=20_000), rng.integers(0, 7, size=20_000).astype(np.float32)):
        y = rng.random(s.shape[0]) < 0.4
        st_, yt = torch.from_numpy(s), torch.from_numpy(y)
        cpu = ood_metrics(st_, yt)
        assert ood_metrics(st_.cuda(), yt.cuda()) == pytest.approx(cpu, abs=1e-12)
        assert ood_metrics(st_.cuda(), yt) == pytest.approx(cpu, abs=1e-12)  # labels on another device
        assert auroc(st_.cuda(), yt.cuda()) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        for tpr in TPRS:
            assert fpr_at_tpr_in(st_.cuda(), yt.cuda(), tpr) == fpr_at_tpr_in(st_, yt, tpr)
            assert fpr_at_tpr_out(st_.cuda(), yt.cuda(), tpr) == fpr_at_tpr_out(st_, yt, tpr)
        metric = OODMetrics()
        metric.update(st_[:5000].cuda(), yt[:5000].cuda())
        metric.update(st_[5000:].cuda(), yt[5000:].cuda())
        assert metric.compute() == pytest.approx(cpu, abs=1e-12)
        with pytest.raises(DataError, match="one device"):
            metric.update(st_[:10], yt[:10])
    logits = torch.randn(100, 5, device="cuda")
    labels = torch.randint(0, 5, (100,), device="cuda")
    assert accuracy(logits, labels) == accuracy(logits.cpu(), labels.cpu())
    cm = confusion_matrix(logits.argmax(1), labels, 5)
    assert cm.device.type == "cuda" and torch.equal(cm.cpu(), confusion_matrix(logits.argmax(1).cpu(), labels.cpu(), 5))


def test_oscr_worked_example():
    # accepted in score order: K+ K- U K+ K+ U -> (FPR, CCR) points
    # (0,0) (0,.25) (0,.25) (.5,.25) (.5,.5) (.5,.75) (1,.75): area .5 * .25 + .5 * .75 = .5
    known = torch.tensor([0.1, 0.2, 0.4, 0.5])
    correct = torch.tensor([True, False, True, True])
    assert metrics.oscr(known, correct, torch.tensor([0.3, 0.6])) == pytest.approx(0.5)
    # a tie between a known and an unknown score is one threshold: the diagonal, area .5
    assert metrics.oscr(torch.tensor([0.3]), torch.tensor([True]), torch.tensor([0.3])) == pytest.approx(0.5)
    # perfect separation reaches the closed-set accuracy
    assert metrics.oscr(known, correct, torch.tensor([1.0, 2.0])) == pytest.approx(0.75)


def test_oscr_bad_inputs():
    with pytest.raises(DataError, match="unknown_scores must be a non-empty"):
        metrics.oscr(torch.tensor([0.1]), torch.tensor([True]), torch.tensor([]))
    with pytest.raises(DataError, match="known_correct must be booleans"):
        metrics.oscr(torch.tensor([0.1, 0.2]), torch.tensor([1, 0]), torch.tensor([0.3]))
    with pytest.raises(DataError, match="must be finite"):
        metrics.oscr(torch.tensor([float("nan")]), torch.tensor([True]), torch.tensor([0.3]))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "torch"])
def test_wide_unsigned_integers_are_read_as_int64(dtype, as_tensor):
    """torch holds uint16/32/64 but can neither reduce nor compare them (``min``, ``<`` against
    int64): they are read as int64, so every metric gives the same as for int64 input."""

    def wide(values: list[int]) -> object:
        array = np.array(values, dtype=dtype)
        return torch.from_numpy(array) if as_tensor else array

    pred, target = [0, 1, 2, 1], [0, 1, 1, 1]
    assert accuracy(wide(pred), wide(target)) == accuracy(np.array(pred), np.array(target)) == 0.75
    assert torch.equal(
        confusion_matrix(wide(pred), wide(target), 3), confusion_matrix(np.array(pred), np.array(target), 3)
    )
    correct = np.array([True, False, True])
    expected = metrics.oscr(np.array([1, 2, 3]), correct, np.array([2, 4]))
    assert metrics.oscr(wide([1, 2, 3]), correct, wide([2, 4])) == expected
    labels = np.array([0, -1, 0, 0])
    assert auroc(wide([1, 9, 4, 3]), labels) == auroc(np.array([1, 9, 4, 3]), labels) == 1.0
