"""Losses against hand-written NumPy formulas (and torch), gradients by finite differences."""

import numpy as np
import pytest

import cugn
from cugn import losses


def _log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_mean_squared_error(rng):
    y_true, y_pred = rng.standard_normal((2, 4, 3))
    per_sample = ((y_pred - y_true) ** 2).mean(axis=-1)
    np.testing.assert_allclose(losses.mean_squared_error(y_true, y_pred).item(), per_sample.mean())
    np.testing.assert_allclose(losses.mean_squared_error(y_true, y_pred, reduction="sum").item(),
                               per_sample.sum())
    np.testing.assert_allclose(losses.mean_squared_error(y_true, y_pred, reduction="none").numpy(),
                               per_sample)
    pred = cugn.tensor(y_pred, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda p: losses.mean_squared_error(y_true, p), [pred])


def test_sparse_categorical_crossentropy_from_logits(rng):
    logits = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    expected = -_log_softmax(logits)[np.arange(5), labels].mean()
    got = losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels).item(), expected,
                               rtol=1e-12)
    t = cugn.tensor(logits, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda z: losses.softmax_cross_entropy(z, labels), [t])


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    loss = losses.softmax_cross_entropy(cugn.tensor(logits, requires_grad=True), [1])
    assert np.isfinite(loss.item()) and abs(loss.item() - 1000.0) < 1e-3
    bce = losses.binary_crossentropy([[0.0, 1.0]], np.array([[500.0, -500.0]], np.float32),
                                     from_logits=True)
    np.testing.assert_allclose(bce.item(), 500.0, rtol=1e-6)


def test_softmax_cross_entropy_with_probability_targets(rng):
    logits = rng.standard_normal((3, 4, 5))
    target = np.exp(_log_softmax(rng.standard_normal((3, 4, 5))))
    expected = -(target * _log_softmax(logits)).sum(-1).mean()
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, target).item(), expected,
                               rtol=1e-12)
    t = cugn.tensor(logits, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda z: losses.softmax_cross_entropy(z, target), [t])


def test_sparse_categorical_crossentropy_on_probabilities(rng):
    probs = np.exp(_log_softmax(rng.standard_normal((4, 3)))) * 2.0  # unnormalised, as Keras allows
    labels = np.array([0, 2, 1, 2])
    normalised = probs / probs.sum(-1, keepdims=True)
    expected = -np.log(normalised[np.arange(4), labels]).mean()
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy(labels, probs).item(),
                               expected, rtol=1e-12)
    t = cugn.tensor(probs, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda p: losses.sparse_categorical_crossentropy(labels, p), [t])


def test_binary_crossentropy(rng):
    logits = rng.standard_normal((4, 3)) * 4
    target = rng.random((4, 3))
    p = 1 / (1 + np.exp(-logits))
    expected = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean(-1).mean()
    np.testing.assert_allclose(losses.binary_crossentropy(target, logits, from_logits=True).item(),
                               expected, rtol=1e-10)
    np.testing.assert_allclose(losses.binary_crossentropy(target, p).item(), expected, rtol=1e-6)
    t = cugn.tensor(logits, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda z: losses.binary_crossentropy(target, z, from_logits=True), [t])
    q = cugn.tensor(p, dtype=np.float64, requires_grad=True)
    cugn.gradcheck(lambda a: losses.binary_crossentropy(target, a), [q])


def test_probabilities_are_clipped_like_keras():
    loss = losses.binary_crossentropy([[1.0]], np.array([[0.0]]))
    np.testing.assert_allclose(loss.item(), -np.log(1e-7), rtol=1e-6)


def test_losses_match_torch(rng):
    torch = pytest.importorskip("torch")
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits),
                                                 torch.from_numpy(labels)).item()
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels).item(), expected,
                               rtol=1e-12)
    target = rng.random((6, 5))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits), torch.from_numpy(target)).item()
    np.testing.assert_allclose(losses.binary_crossentropy(target, logits, from_logits=True).item(),
                               expected, rtol=1e-12)


def test_bad_arguments_are_named():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        losses.softmax_cross_entropy(logits, [0, 3])
    with pytest.raises(ValueError, match="y_true must have shape"):
        losses.sparse_categorical_crossentropy([0, 1, 2], logits, from_logits=True)
    with pytest.raises(TypeError, match="integer class labels"):
        losses.sparse_categorical_crossentropy(np.array([0.0, 1.0]), logits)
    with pytest.raises(ValueError, match="y_true has shape"):
        losses.mean_squared_error(np.zeros((2, 4)), logits)
    with pytest.raises(ValueError, match="reduction"):
        losses.binary_crossentropy(logits, logits, reduction="average")
    with pytest.raises(TypeError, match="floating point"):
        losses.mean_squared_error(np.zeros((2, 3)), np.zeros((2, 3), np.int64))
