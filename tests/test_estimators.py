"""The estimators (encircle.estimators): scikit-learn / PyOD interop, inputs, defaults, bad
input, persistence and export, on small real data (scikit-learn's breast_cancer and digits)."""

import importlib.util
import inspect
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, PredefinedSplit, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import encircle  # noqa: E402
from encircle.data.dataset import ImageDataset  # noqa: E402
from encircle.errors import CheckpointError, ConfigError, DataError, EncircleError, TrainingError  # noqa: E402
from encircle.estimators import COMMON, ESTIMATORS, OpenSetEstimator, OutlierEstimator  # noqa: E402
from encircle.inputs import as_samples, default_config, default_schedule  # noqa: E402
from encircle.methods import hyperparameters, list_methods, method_class  # noqa: E402

ONE_CLASS = ["DeepSVDD", "DeepSAD", "Autoencoder"]
OPEN_SET = ["CAC", "MCHAD", "Softmax"]
FAST = {"epochs": 3, "random_state": 0, "device": "cpu"}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is several times faster on a shared CPU (and repeatable)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer one-class: train on 60% of the benign, test on the rest + every malignant."""
    data = load_breast_cancer()
    normal, anomalies = data.data[data.target == 1], data.data[data.target == 0]
    train, test = train_test_split(normal, test_size=0.4, random_state=0)
    x_test = np.concatenate([test, anomalies])
    is_anomaly = np.r_[np.zeros(len(test)), np.ones(len(anomalies))]
    return train, x_test, is_anomaly, anomalies


@pytest.fixture(scope="module")
def digits():
    """digits open-set: classes 0-5 known (train/test), 6-9 unknown."""
    data = load_digits()
    known = data.target < 6
    x_train, x_test, y_train, y_test = train_test_split(
        data.data[known], data.target[known], test_size=0.3, random_state=0
    )
    return x_train, y_train, x_test, y_test, data.data[~known]


def fitted(name, cancer, digits, **params):
    cls = getattr(encircle, name)
    est = cls(**(FAST | params))
    if name in OPEN_SET:
        return est.fit(digits[0], digits[1])
    return est.fit(cancer[0])


def sample_of(name, cancer, digits):
    return digits[2] if name in OPEN_SET else cancer[1]


# -- the classes ----------------------------------------------------------------------


def test_every_method_has_an_estimator_at_the_top_level():
    assert {cls._method for cls in ESTIMATORS.values()} == set(list_methods())
    for name in ESTIMATORS:
        assert getattr(encircle, name) is ESTIMATORS[name]
    assert encircle.Softmax._method == "softmax" and encircle.DeepSVDD().objective == "one-class"


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_init_signature_is_the_methods_declaration_plus_the_training_arguments(name):
    cls = ESTIMATORS[name]
    parameters = inspect.signature(cls).parameters
    declared = [h.name for h in hyperparameters(method_class(cls._method))]
    assert list(parameters) == declared + [c[0] for c in COMMON]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    defaults = {h.name: h.default for h in hyperparameters(method_class(cls._method))}
    assert {k: parameters[k].default for k in declared} == defaults
    est = cls()
    assert est.get_params() == {k: p.default for k, p in parameters.items()}, "__init__ only stores"
    assert all(f"{k}:" in cls.__doc__ for k in parameters), "every argument is documented"
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        cls(learning_rate=0.1)


def test_the_done_when_line_float64_and_no_config_objects():
    x = np.random.default_rng(0).standard_normal((500, 8))  # float64
    est = encircle.DeepSVDD().fit(x)
    scores = est.score_samples(x)
    assert scores.shape == (500,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    assert est.detector_.config.model.name == "mlp" and est.detector_.config.data.preprocess == "standardize"


# -- outputs --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_CLASS)
def test_one_class_outputs_follow_sklearn_and_pyod(name, cancer, digits):
    est = fitted(name, cancer, digits, contamination=0.1)
    x = cancer[1]
    scores, anomaly = est.score_samples(x), est.anomaly_score(x)
    np.testing.assert_array_equal(scores, -anomaly)
    np.testing.assert_array_equal(est.decision_function(x), scores - est.offset_)
    assert est.offset_ == -est.threshold_
    np.testing.assert_array_equal(est.predict(x), np.where(anomaly > est.threshold_, -1, 1))
    assert set(np.unique(est.predict(x))) <= {-1, 1} and est.predict(x).dtype == np.int64
    assert est.decision_scores_.shape == (len(cancer[0]),)
    np.testing.assert_array_equal(est.labels_, (est.decision_scores_ > est.threshold_).astype(int))
    assert abs(est.labels_.mean() - 0.1) < 0.01, "contamination is the share of training data flagged"
    np.testing.assert_array_equal(est.fit_predict(cancer[0]), 1 - 2 * est.labels_)


@pytest.mark.parametrize("name", OPEN_SET)
def test_open_set_outputs_are_classes_or_minus_one_and_class_scores(name, cancer, digits):
    _, _, x_test, y_test, unknown = digits
    est = fitted(name, cancer, digits, epochs=10)
    np.testing.assert_array_equal(est.classes_, np.arange(6))
    predicted = est.predict(x_test)
    assert set(np.unique(predicted)) <= {-1, 0, 1, 2, 3, 4, 5}
    proba = est.predict_proba(x_test)
    assert proba.shape == (len(x_test), 6)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    known = predicted >= 0
    np.testing.assert_array_equal(predicted[known], proba.argmax(axis=1)[known])
    assert (proba.argmax(axis=1) == y_test).mean() > 0.85, "the known classes are learnt"
    unknown_auroc = roc_auc_score(
        np.r_[np.zeros(len(x_test)), np.ones(len(unknown))], est.anomaly_score(np.concatenate([x_test, unknown]))
    )
    assert unknown_auroc > 0.8, unknown_auroc
    assert (est.predict(unknown) == -1).mean() > (predicted == -1).mean()


def test_open_set_labels_are_kept_as_given(digits):
    x_train, y_train = digits[0], digits[1]
    est = encircle.Softmax(**FAST).fit(x_train, y_train * 10 + 3)  # labels 3, 13, ..., 53
    np.testing.assert_array_equal(est.classes_, np.arange(6) * 10 + 3)
    assert set(np.unique(est.predict(x_train))) <= {-1, *range(3, 54, 10)}


@pytest.mark.parametrize("rule", ["msp", "maxlogit", "max-logit", "energy", "mahalanobis"])
def test_softmax_score_rules(rule, digits):
    est = encircle.Softmax(score_rule=rule, shrinkage=0.1, **FAST).fit(digits[0], digits[1])
    assert est.detector_.method_.score_rule == rule.replace("maxlogit", "max-logit")
    assert np.isfinite(est.anomaly_score(digits[4])).all()


# -- learning on real data ------------------------------------------------------------


def test_default_preprocessing_is_good_on_breast_cancer(cancer):
    train, x_test, is_anomaly, _ = cancer
    auroc = roc_auc_score(is_anomaly, encircle.DeepSVDD(random_state=0).fit(train).anomaly_score(x_test))
    forest = roc_auc_score(is_anomaly, -IsolationForest(random_state=0).fit(train).score_samples(x_test))
    assert auroc > 0.93, f"Deep SVDD (defaults) {auroc:.3f}, IsolationForest {forest:.3f}"


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("DeepSVDD", {}),
        ("DeepSVDD", {"objective": "soft-boundary", "warm_up_epochs": 2}),
        ("DeepSVDD", {"pretrain": True, "pretrain_epochs": 5, "pretrain_lr": 1e-3}),
        ("DeepSAD", {}),
        ("Autoencoder", {}),
    ],
)
def test_each_one_class_method_learns_breast_cancer(name, params, cancer):
    train, x_test, is_anomaly, anomalies = cancer
    est = getattr(encircle, name)(random_state=0, **params)
    fit_kwargs = {"outliers": anomalies[:10]} if name == "DeepSAD" else {}
    est.fit(train, **fit_kwargs)
    auroc = roc_auc_score(is_anomaly, est.anomaly_score(x_test))
    assert auroc > 0.85, f"{name} {params}: {auroc:.3f}"


def test_ognet_learns_digit_images():
    data = load_digits()
    images = np.round(data.images * 255 / 16).astype(np.uint8)  # (N, 8, 8) uint8: images, resized to 45x45
    est = encircle.OGNet(model="ognet-small", epochs=3, phase2_iterations=10, random_state=0)
    est.fit(images[data.target == 0][:150])
    auroc = roc_auc_score(data.target != 0, est.anomaly_score(images))
    assert auroc > 0.9, auroc
    assert est.predict(images[:5]).shape == (5,)
    with pytest.raises(DataError, match=r"^OGNet trains on images \(N, H, W\), .* X holds feature vectors"):
        encircle.OGNet(model="ognet-small", epochs=1).fit(np.zeros((10, 4)))


def test_random_state_repeats_a_run_and_none_draws_a_new_one(cancer):
    a = encircle.DeepSVDD(**FAST).fit(cancer[0])
    b = encircle.DeepSVDD(**FAST).fit(cancer[0])
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)
    c = encircle.DeepSVDD(**(FAST | {"random_state": None})).fit(cancer[0])
    assert not np.array_equal(a.decision_scores_, c.decision_scores_)


# -- scikit-learn interop -------------------------------------------------------------


@pytest.mark.parametrize("name", ONE_CLASS + OPEN_SET)
def test_in_a_pipeline_cloned_and_pickled(name, cancer, digits):
    est = getattr(encircle, name)(**FAST)
    pipe = make_pipeline(StandardScaler(), est)
    x = sample_of(name, cancer, digits)
    if name in OPEN_SET:
        pipe.fit(digits[0], digits[1])
    else:
        pipe.fit(cancer[0])
    assert pipe.predict(x).shape == (len(x),)
    assert pipe.score_samples(x).shape == (len(x),)
    copy = clone(est)
    assert copy.get_params() == est.get_params() and not hasattr(copy, "detector_")
    fitted_est = pipe[-1]
    again = pickle.loads(pickle.dumps(fitted_est))
    x_scaled = pipe[0].transform(x)
    np.testing.assert_array_equal(again.anomaly_score(x_scaled), fitted_est.anomaly_score(x_scaled))


def test_grid_search_one_class_with_a_scorer_on_labelled_validation_data(cancer):
    train, x_test, is_anomaly, _ = cancer
    x = np.concatenate([train, x_test])
    y = np.r_[np.ones(len(train)), np.where(is_anomaly == 1, -1, 1)]  # +1 normal, -1 anomaly (sklearn)
    fold = np.r_[np.full(len(train), -1), np.zeros(len(x_test))]  # train on normal data, validate on both
    search = GridSearchCV(
        encircle.DeepSVDD(random_state=0, device="cpu"),
        {"epochs": [2, 15]},
        scoring="roc_auc",  # on decision_function: higher = more normal, positive class +1 = normal
        cv=PredefinedSplit(fold),
        refit=False,
    )
    search.fit(x, y)
    assert set(search.best_params_) == {"epochs"}
    assert search.best_score_ > 0.9


def test_grid_search_open_set_by_accuracy(digits):
    search = GridSearchCV(encircle.CAC(**FAST), {"alpha": [5.0, 10.0]}, scoring="accuracy", cv=2)
    search.fit(digits[0], digits[1])
    assert search.best_score_ > 0.5 and search.best_estimator_.predict(digits[2]).shape == (len(digits[2]),)


@pytest.mark.parametrize("name", ONE_CLASS + OPEN_SET)
def test_save_and_load_give_identical_scores(name, cancer, digits, tmp_path):
    est = fitted(name, cancer, digits)
    est.save(tmp_path / "est.pt")
    back = encircle.load(tmp_path / "est.pt")
    assert type(back) is type(est) and back.get_params() == est.get_params()
    x = sample_of(name, cancer, digits)
    np.testing.assert_array_equal(back.anomaly_score(x), est.anomaly_score(x))
    np.testing.assert_array_equal(back.predict(x), est.predict(x))
    np.testing.assert_array_equal(back.labels_, est.labels_)
    if name in OPEN_SET:
        np.testing.assert_array_equal(back.classes_, est.classes_)


def test_loading_refuses_other_files(cancer, tmp_path):
    est = encircle.DeepSVDD(**FAST).fit(cancer[0])
    est.detector_.save(tmp_path / "detector.pt")
    with pytest.raises(CheckpointError, match="is not an encircle-estimator file"):
        encircle.load(tmp_path / "detector.pt")


# -- inputs ---------------------------------------------------------------------------


def test_float64_pandas_and_tensors_give_the_same_scores(cancer):
    pd = pytest.importorskip("pandas")
    train = cancer[0]
    columns = [f"f{i}" for i in range(train.shape[1])]
    est = encircle.DeepSVDD(**FAST).fit(pd.DataFrame(train, columns=columns))
    np.testing.assert_array_equal(est.feature_names_in_, columns)
    reference = est.anomaly_score(train.astype(np.float32))
    np.testing.assert_array_equal(est.anomaly_score(train), reference)
    np.testing.assert_array_equal(est.anomaly_score(pd.DataFrame(train, columns=columns)), reference)
    np.testing.assert_array_equal(est.anomaly_score(torch.from_numpy(train)), reference)
    assert est.n_features_in_ == 30


@pytest.mark.parametrize(
    ("array", "shape", "dtype", "network"),
    [
        (np.zeros((4, 28, 28), np.uint8), (1, 28, 28), torch.uint8, "lenet-mnist"),
        (np.zeros((4, 1, 28, 28), np.int64), (1, 28, 28), torch.uint8, "lenet-mnist"),
        (np.zeros((4, 28, 28, 1), np.int32), (1, 28, 28), torch.uint8, "lenet-mnist"),
        (np.zeros((4, 32, 32, 3), np.uint8), (3, 32, 32), torch.uint8, "lenet-cifar10"),
        (np.zeros((4, 3, 20, 20), np.float64), (3, 20, 20), torch.float32, "lenet-cifar10"),
        (np.zeros((4, 8, 8)), (1, 8, 8), torch.float32, "lenet-mnist"),
        (np.zeros((4, 7), np.int64), (7,), torch.float32, "mlp"),
        (np.zeros((4, 7), np.float16), (7,), torch.float32, "mlp"),
    ],
)
def test_inputs_are_recognised_as_images_or_features(array, shape, dtype, network):
    samples = as_samples(array)
    assert tuple(samples.shape[1:]) == shape and samples.dtype == dtype
    assert default_config(samples).model.name == network


def test_default_schedule_follows_the_data_size():
    assert default_schedule(214) == (17, 26)
    assert default_schedule(60000) == (10, 128)
    assert default_schedule(20) == (75, 16)
    assert default_schedule(5) == (100, 16)


def test_images_from_arrays_datasets_and_dataloaders_train_alike():
    rng = np.random.default_rng(0)
    images = (rng.random((64, 1, 28, 28)) * 80).astype(np.uint8)
    reference = encircle.DeepSVDD(epochs=1, random_state=0, device="cpu").fit(images)
    scores = reference.anomaly_score(images)
    dataset = ImageDataset(torch.from_numpy(images), torch.zeros(64, dtype=torch.int64), "d", "test")
    tensors = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.zeros(64))
    loader = torch.utils.data.DataLoader(tensors, batch_size=10)
    for data in (dataset, tensors, loader, images.astype(np.int64), images.transpose(0, 2, 3, 1)):
        est = encircle.DeepSVDD(epochs=1, random_state=0, device="cpu").fit(data)
        np.testing.assert_allclose(est.anomaly_score(data), scores, rtol=1e-5, atol=1e-6)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (np.zeros(5), DataError, r"X must be 2-D features .* got a 1-D array of shape \(5,\); Reshape your data"),
        (np.zeros((2, 1, 1, 1, 1)), DataError, r"got a 5-D array of shape \(2, 1, 1, 1, 1\)"),
        (np.zeros((0, 3)), DataError, r"^X holds no samples \(shape \(0, 3\)\); pass at least one$"),
        (np.zeros((5, 0)), DataError, r"^X has 0 feature\(s\) \(shape=\(5, 0\)\) while a minimum of 1 is required"),
        (np.zeros((1, 3)), DataError, r"^DeepSVDD needs at least 2 samples to fit, got 1 sample$"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), DataError, r"^X contains NaN or infinite values \(1 of 2 samples\)"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), DataError, r"^X contains NaN or infinite values"),
        (np.array([["a", "b"], ["c", "d"]]), DataError, r"^X must hold numbers \(float or integer\), got dtype <U1"),
        (np.array([[1, 2], [3]], dtype=object), DataError, r"X must hold numbers .* \(samples of different shapes\?\)"),
        (np.zeros((3, 2), complex), DataError, r"^Complex data not supported"),
        (np.full((2, 8, 8), 300), DataError, r"^X holds integer images with values 300..300; expected 0..255"),
        (np.zeros((2, 5, 6, 7)), DataError, r"neither axis 1 nor axis 3 has 1 or 3 channels"),
        ([[1.0, 2.0], [3.0]], DataError, r"^X must be an array of numbers, got list \(setting an array element"),
    ],
)
def test_bad_x_is_a_data_error_that_says_what_to_change(x, error, message):
    with pytest.raises(error, match=message):
        encircle.DeepSVDD(**FAST).fit(x)


def test_bad_input_errors_are_value_errors_for_sklearn_code():
    assert issubclass(DataError, ValueError) and issubclass(ConfigError, ValueError)
    assert issubclass(encircle.estimators.NotFittedError, NotFittedError)


def test_sparse_input_is_refused_with_what_to_do():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(DataError, match=r"^X is sparse; sparse data is not supported: pass X.toarray\(\)$"):
        encircle.DeepSVDD(**FAST).fit(sparse.csr_matrix(np.eye(3)))


def test_a_dataframe_with_text_columns():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})
    with pytest.raises(DataError, match=r"^X is a DataFrame with non-numeric columns"):
        encircle.DeepSVDD(**FAST).fit(frame)


def test_a_dataloader_yielding_the_wrong_thing():
    loader = torch.utils.data.DataLoader([{"x": torch.zeros(3)}] * 4, batch_size=2)
    with pytest.raises(DataError, match=r"^X: batch 0 is a dict; a DataLoader must yield tensors or"):
        encircle.DeepSVDD(**FAST).fit(loader)
    mixed = torch.utils.data.DataLoader([torch.zeros(3)] * 2 + [torch.zeros(4)] * 2, batch_size=2)
    with pytest.raises(DataError, match=r"^X: batch 1 has samples of shape \(4,\), the earlier ones \(3,\)"):
        encircle.DeepSVDD(**FAST).fit(mixed)


def test_outliers_for_a_method_that_does_not_use_them(cancer):
    with pytest.raises(DataError, match=r"^DeepSVDD does not use outliers; drop outliers=..., or use one that does"):
        encircle.DeepSVDD(**FAST).fit(cancer[0], outliers=cancer[3])
    with pytest.raises(DataError, match=r"^outliers have samples of shape \(3,\) float32, X has \(30,\) float32"):
        encircle.DeepSAD(**FAST).fit(cancer[0], outliers=cancer[3][:, :3])


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (None, r"^CAC learns known classes, so it requires y to be passed, but the target y is None"),
        (np.zeros(5, int), r"^y must be 1-D with one label per sample \(20\), got shape \(5,\)"),
        (np.zeros(20, int), r"^y must hold at least 2 known classes, got 1 class \(\[0\]\)"),
        (np.r_[np.zeros(10, int), -np.ones(10, int)], r"^y holds negative labels; -1 means unknown in encircle"),
        (np.linspace(0, 1, 20), r"^Unknown label type: continuous; y must hold integer class labels"),
        (np.array(["a", "b"] * 10), r"^Unknown label type: <U1"),
    ],
)
def test_bad_labels_for_an_open_set_method(y, message):
    x = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(DataError, match=message):
        encircle.CAC(**FAST).fit(x, y)


def test_one_class_estimators_ignore_y_as_sklearn_does(cancer):
    """Pipelines and searches pass y along; the one-class methods learn from X alone."""
    a = encircle.DeepSVDD(**FAST).fit(cancer[0], np.arange(len(cancer[0])))
    b = encircle.DeepSVDD(**FAST).fit(cancer[0])
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)


@pytest.mark.parametrize("call", ["predict", "score_samples", "decision_function", "anomaly_score", "save", "export"])
def test_an_unfitted_estimator_raises_sklearns_not_fitted_error(call, tmp_path):
    est = encircle.DeepSVDD()
    args = (tmp_path / "x",) if call in ("save", "export") else (np.zeros((3, 2)),)
    with pytest.raises(NotFittedError, match=r"^This DeepSVDD instance is not fitted yet"):
        getattr(est, call)(*args)
    with pytest.raises(NotFittedError):
        encircle.CAC().predict_proba(np.zeros((3, 2)))


def test_scoring_data_of_another_width_or_kind(cancer):
    est = encircle.DeepSVDD(**FAST).fit(cancer[0])
    with pytest.raises(DataError, match=r"^X has 4 features, but DeepSVDD is expecting 30 features as input$"):
        est.predict(np.zeros((2, 4)))
    rng = np.random.default_rng(0)
    images = encircle.DeepSVDD(epochs=1, device="cpu").fit((rng.random((8, 28, 28)) * 255).astype(np.uint8))
    with pytest.raises(DataError, match=r"^X has samples of shape \(1, 14, 14\), but DeepSVDD was fitted on shape"):
        images.predict(np.zeros((2, 14, 14), np.uint8))
    with pytest.raises(DataError, match=r"^X holds float32 images, but DeepSVDD was fitted on uint8 images"):
        images.predict(np.zeros((2, 28, 28)))


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"contamination": 0.7}, ConfigError, r"^contamination must be a number in \(0, 0.5\], got 0.7$"),
        ({"epochs": 0}, ConfigError, r"^train.epochs must be >= 1, got 0$"),
        ({"nu": 2.0}, ConfigError, r"^method.nu must be in \(0, 1\], got 2.0$"),
        ({"objective": "hard"}, ConfigError, r"^method.objective must be one of"),
        ({"model": "resnet"}, ConfigError, r"^unknown model 'resnet'"),
        ({"random_state": "seed"}, ConfigError, r"^random_state must be None or an integer, got 'seed'$"),
        ({"n_jobs": 0}, ConfigError, r"^n_jobs must be None, -1 or a positive integer, got 0$"),
    ],
)
def test_bad_arguments_fail_at_fit_with_the_argument_named(params, error, message, cancer):
    est = encircle.DeepSVDD(**(FAST | params))  # __init__ only stores
    with pytest.raises(error, match=message):
        est.fit(cancer[0])


def test_a_divergent_learning_rate_stops_with_an_error_naming_lr(cancer):
    with pytest.raises(
        TrainingError, match=r"^DeepSVDD: the deep-svdd loss (diverged|is (nan|inf)).*lower lr"
    ) as error:
        encircle.DeepSVDD(lr=1000.0, random_state=0, device="cpu").fit(cancer[0])
    assert "train.lr" not in str(error.value), "the estimator's argument is lr"


def test_a_collapse_names_the_estimators_arguments():
    with pytest.raises(
        TrainingError, match=r"^DeepSVDD: Deep SVDD collapsed in epoch 1: .* try eps > 0, a lower lr or"
    ):
        encircle.DeepSVDD(**FAST).fit(np.ones((20, 3)))


def test_softmax_score_rule_is_checked(digits):
    with pytest.raises(ConfigError, match=r"^score_rule must be one of msp, maxlogit, max-logit, energy, mahalanobis"):
        encircle.Softmax(score_rule="odin", **FAST).fit(digits[0], digits[1])


def test_every_encircle_error_is_one_class(cancer):
    with pytest.raises(EncircleError):
        encircle.DeepSVDD(**FAST).fit(np.zeros(3))


# -- export ---------------------------------------------------------------------------

WITHOUT_ENCIRCLE = textwrap.dedent(
    """
    import sys
    sys.modules["encircle"] = None  # as if it were not installed: `import encircle` fails
    try:
        import encircle  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("encircle is importable")
    import numpy as np
    x = np.load(sys.argv[2])
    if sys.argv[1].endswith(".onnx"):
        import onnxruntime
        session = onnxruntime.InferenceSession(sys.argv[1])
        scores = session.run(None, {"x": x})[0]
    else:
        import torch
        program = torch.export.load(sys.argv[1]).module()
        scores = program(torch.from_numpy(x)).numpy()
    np.save(sys.argv[3], scores)
    """
)


def score_without_encircle(program, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "score.py").write_text(WITHOUT_ENCIRCLE)
    argv = [sys.executable, "-I", str(tmp_path / "score.py"), str(program), str(tmp_path / "x.npy")]
    done = subprocess.run([*argv, str(tmp_path / "s.npy")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(tmp_path / "s.npy")


@pytest.mark.parametrize(
    ("name", "params"),
    [("DeepSVDD", {}), ("DeepSVDD", {"objective": "soft-boundary"}), ("Autoencoder", {}), ("CAC", {})],
)
def test_export_scores_without_encircle_equal_the_estimators(name, params, cancer, digits, tmp_path):
    est = fitted(name, cancer, digits, **params)
    x = sample_of(name, cancer, digits).astype(np.float32)
    program = est.export(tmp_path / "detector.pt2")
    assert (tmp_path / "detector.json").exists()
    scores = score_without_encircle(program, x, tmp_path)
    assert np.abs(scores - est.anomaly_score(x)).max() <= 1e-5


def test_export_of_an_image_detector(tmp_path):
    images = (np.random.default_rng(0).random((40, 28, 28)) * 255).astype(np.uint8)
    est = encircle.DeepSVDD(epochs=2, random_state=0, device="cpu").fit(images)
    program = est.export(tmp_path / "images.pt2")
    scores = score_without_encircle(program, images[:, None], tmp_path)
    assert np.abs(scores - est.anomaly_score(images)).max() <= 1e-5


def test_export_to_onnx_scores_without_encircle(digits, cancer, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    est = fitted("MCHAD", cancer, digits)
    x = digits[2].astype(np.float32)
    program = est.export(tmp_path / "detector.onnx", format="onnx")
    scores = score_without_encircle(program, x, tmp_path)
    assert np.abs(scores - est.anomaly_score(x)).max() <= 1e-5


def test_export_format_is_checked(cancer, tmp_path):
    est = encircle.DeepSVDD(**FAST).fit(cancer[0])
    with pytest.raises(ConfigError, match=re.escape("format must be 'torch' or 'onnx', got 'tflite'")):
        est.export(tmp_path / "x", format="tflite")


def test_estimator_kinds():
    assert all(issubclass(getattr(encircle, n), OutlierEstimator) for n in [*ONE_CLASS, "OGNet"])
    assert all(issubclass(getattr(encircle, n), OpenSetEstimator) for n in OPEN_SET)


# -- documentation ----------------------------------------------------------------------


def test_the_docstring_examples_run():
    import doctest

    import encircle.estimators

    result = doctest.testmod(encircle.estimators, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0


def test_the_readme_python_section_runs(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Use it from Python") :]
    blocks = re.findall(r"```python\n(.*?)```", section[: section.index("\n## ", 5)], re.DOTALL)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(blocks[0], namespace)  # fit, predict, save/load, export
    exec(blocks[1], namespace)  # plain torch
    est, X = namespace["est"], namespace["X"]
    assert np.abs(namespace["scores"].detach().numpy() - est.anomaly_score(X)).max() <= 1e-5
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        est.export("svdd.onnx", format="onnx")
        exec(blocks[2], namespace)
        assert np.abs(namespace["scores"] - est.anomaly_score(X)).max() <= 1e-5


def test_the_detector_takes_float64_features_too():
    from encircle.config import RunConfig, with_overrides
    from encircle.detector import Detector

    x = np.random.default_rng(0).standard_normal((40, 5))  # float64
    config = with_overrides(RunConfig(), {"model.name": "mlp", "train.epochs": 1, "train.device": "cpu"})
    scores = Detector(config).fit(x, progress=False).score(x)
    assert scores.dtype == torch.float32 and scores.shape == (40,)


def test_open_set_labels_come_with_datasets_and_dataloaders(digits):
    x, y = torch.as_tensor(digits[0], dtype=torch.float32), torch.as_tensor(digits[1])
    reference = encircle.Softmax(**FAST).fit(digits[0], digits[1])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    dataset = ImageDataset(x, y.to(torch.int64), "digits", "sklearn")
    for data in (loader, dataset):
        est = encircle.Softmax(**FAST).fit(data)
        np.testing.assert_array_equal(est.classes_, reference.classes_)
        np.testing.assert_allclose(est.anomaly_score(digits[2]), reference.anomaly_score(digits[2]), atol=1e-5)


def test_a_refit_forgets_the_earlier_fit(cancer):
    pd = pytest.importorskip("pandas")
    est = encircle.DeepSVDD(**FAST).fit(pd.DataFrame(cancer[0], columns=[f"c{i}" for i in range(30)]))
    assert hasattr(est, "feature_names_in_")
    est.fit(cancer[0][:, :5])
    assert not hasattr(est, "feature_names_in_") and est.n_features_in_ == 5


def test_n_jobs_sets_the_threads_only_while_the_estimator_works(cancer, monkeypatch):
    seen = []
    real = encircle.estimators.Detector.score

    def spy(self, data, batch_size=None):
        seen.append(torch.get_num_threads())
        return real(self, data, batch_size)

    monkeypatch.setattr(encircle.estimators.Detector, "score", spy)
    torch.set_num_threads(2)
    est = encircle.DeepSVDD(**FAST).fit(cancer[0])  # features on the CPU: one thread
    est.anomaly_score(cancer[1])
    assert set(seen) == {1} and torch.get_num_threads() == 2
    est.set_params(n_jobs=2).anomaly_score(cancer[1])
    assert seen[-1] == 2 and torch.get_num_threads() == 2
