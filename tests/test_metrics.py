"""Metrics against scikit-learn (exact to 1e-9, heavy ties included) and by hand."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.metrics import confusion_matrix as sk_confusion

from encircle.errors import DataError
from encircle.metrics import (
    OODMetrics,
    accuracy,
    aupr_in,
    aupr_out,
    auroc,
    confusion_matrix,
    fpr_at_tpr_in,
    fpr_at_tpr_out,
    ood_metrics,
)


@st.composite
def scored(draw):
    """Scores (often from very few distinct values: heavy ties) with both classes."""
    n = draw(st.integers(2, 80))
    distinct = draw(st.sampled_from([1, 2, 3, 5, 1000]))
    values = draw(st.lists(st.integers(0, distinct - 1), min_size=n, max_size=n))
    is_ood = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda b: 0 < sum(b) < len(b)))
    scale = draw(st.sampled_from([1.0, 0.1, -3.7]))
    return np.array(values, dtype=np.float64) * scale, np.array(is_ood)


def sk_fpr(y_true, score, tpr):
    fpr, tpr_curve, _ = roc_curve(y_true, score, drop_intermediate=False)
    return fpr[np.argmax(tpr_curve >= tpr)]


@settings(max_examples=300, deadline=None)
@given(scored())
def test_against_sklearn(data):
    s, y = data
    labels = torch.from_numpy(np.where(y, -1, 3))  # integer labels: -1 = OOD
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert aupr_out(s, labels) == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert aupr_in(torch.from_numpy(s), y) == pytest.approx(average_precision_score(~y, -s), abs=1e-9)
    for tpr in (0.95, 0.5, 1.0, 0.8):
        assert fpr_at_tpr_out(s, y, tpr) == pytest.approx(sk_fpr(y, s, tpr), abs=1e-12)
        assert fpr_at_tpr_in(s, y, tpr) == pytest.approx(sk_fpr(~y, -s, tpr), abs=1e-12)
    combined = ood_metrics(s, labels)
    assert combined == {
        "auroc": auroc(s, y),
        "aupr_in": aupr_in(s, y),
        "aupr_out": aupr_out(s, y),
        "fpr_at_95_tpr_in": fpr_at_tpr_in(s, y),
        "fpr_at_95_tpr_out": fpr_at_tpr_out(s, y),
    }


def test_by_hand():
    # OOD scores 3, 1; ID scores 2, 0 -> pairs (3>2, 3>0, 1<2, 1>0): AUROC 3/4.
    s = torch.tensor([3.0, 1.0, 2.0, 0.0])
    y = torch.tensor([-1, -1, 0, 0])
    assert auroc(s, y) == 0.75
    # OOD ranked by score: 3 (P=1, R=.5), 2 (ID), 1 (P=2/3, R=1): AP = .5*1 + .5*2/3
    assert aupr_out(s, y) == pytest.approx(0.5 + 1 / 3)
    # a tie between an OOD and an ID score counts half
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([-1, 0])) == 0.5
    # 95% of two OOD samples needs both: threshold 1 flags the ID score 2 -> FPR 1/2
    assert fpr_at_tpr_out(s, y) == 0.5
    # 95% of two ID samples: threshold 2 accepts the OOD score 1 -> FPR 1/2
    assert fpr_at_tpr_in(s, y) == 0.5


def test_float32_and_float64_agree():
    rng = np.random.default_rng(1)
    s = rng.normal(size=2000)
    y = rng.random(2000) < 0.3
    s[y] += 1
    assert ood_metrics(s.astype(np.float32), y) == pytest.approx(ood_metrics(s, y), abs=1e-6)


def test_large_input_matches_sklearn():
    rng = np.random.default_rng(2)
    s = rng.normal(size=200_000).astype(np.float32).round(2)  # continuous with many ties
    y = rng.random(200_000) < 0.5
    s[y] += 0.5
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert aupr_out(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-9)


def test_streaming_equals_functional():
    rng = np.random.default_rng(3)
    s = torch.from_numpy(rng.normal(size=300))
    labels = torch.from_numpy(rng.integers(-1, 3, size=300))
    metric = OODMetrics()
    for part in range(3):
        metric.update(s[part * 100 : (part + 1) * 100], labels[part * 100 : (part + 1) * 100])
    assert metric.compute() == ood_metrics(s, labels)
    metric.reset()
    with pytest.raises(DataError, match="before any update"):
        metric.compute()


def test_accuracy_and_confusion_matrix():
    labels = torch.tensor([0, 1, 2, 2])
    assert accuracy(torch.tensor([0, 1, 1, 2]), labels) == 0.75
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5]])
    assert accuracy(logits, labels) == 0.75
    pred = torch.tensor([0, 1, -1, 2, -1, 0])
    true = torch.tensor([0, 1, 2, 2, -1, -1])
    cm = confusion_matrix(pred, true, num_classes=3)
    expected = sk_confusion(np.where(true < 0, 3, true), np.where(pred < 0, 3, pred), labels=[0, 1, 2, 3])
    assert cm.dtype == torch.int64 and np.array_equal(cm.numpy(), expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: auroc([0.1, 0.2], [0, -1]), "must be a torch tensor or NumPy array, got list"),
        (lambda: auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])), r"no OOD \(label -1 / True\) sample"),
        (lambda: auroc(torch.tensor([0.1, 0.2]), torch.tensor([-1, -1])), "no in-distribution"),
        (lambda: auroc(torch.tensor([0.1, float("nan")]), torch.tensor([0, -1])), "1 NaN or infinite"),
        (lambda: auroc(torch.tensor([0.1, float("inf")]), torch.tensor([0, -1])), "NaN or infinite"),
        (lambda: auroc(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0, -1])), "3 scores, 2 labels"),
        (lambda: auroc(torch.tensor([]), torch.tensor([], dtype=torch.int64)), "scores are empty"),
        (lambda: auroc(torch.zeros(2, 2), torch.tensor([0, -1])), r"scores must be 1-D, got shape \(2, 2\)"),
        (lambda: auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.0, 1.0])), "labels must be integers"),
        (lambda: auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, -2])), "got -2"),
        (lambda: fpr_at_tpr_in(torch.tensor([0.1, 0.2]), torch.tensor([0, -1]), 0.0), r"tpr must be in \(0, 1\]"),
        (lambda: fpr_at_tpr_out(torch.tensor([0.1, 0.2]), torch.tensor([0, -1]), 1.5), r"tpr must be in \(0, 1\]"),
        (lambda: accuracy(torch.tensor([0, 1]), torch.tensor([0, -1])), "closed-set"),
        (lambda: accuracy(torch.tensor([0, 1]), torch.tensor([0])), "must be"),
        (lambda: accuracy(torch.tensor([], dtype=torch.int64), torch.tensor([], dtype=torch.int64)), "empty"),
        (lambda: confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3), r"predictions must be in -1..2"),
        (lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 0), "num_classes must be >= 1"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(DataError, match=message):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_match_cpu():  # pragma: no cover - run where a GPU is present
    rng = np.random.default_rng(4)
    s = torch.from_numpy(rng.normal(size=5000))
    y = torch.from_numpy(rng.random(5000) < 0.4)
    assert ood_metrics(s.cuda(), y.cuda()) == pytest.approx(ood_metrics(s, y), abs=1e-12)
