"""A short custom training loop must learn (synthetic data, no scikit-learn)."""

import numpy as np
import pytest

import cugn
from cugn import losses
from cugn.layers import (Conv2D, Dense, GlobalAveragePooling2D, GroupNormalization, MaxPooling2D,
                         Sequential)
from cugn.optim import SGD, Adam


def bars(count, rng):
    """6x6 images holding one horizontal (class 0) or vertical (class 1) bar, with noise."""
    labels = rng.integers(0, 2, count)
    images = rng.normal(0, 0.3, (count, 6, 6, 1)).astype(np.float32)
    positions = rng.integers(0, 6, count)
    for image, label, position in zip(images, labels, positions):
        if label == 0:
            image[position, :, 0] += 1.0
        else:
            image[:, position, 0] += 1.0
    return images, labels


def accuracy(model, images, labels):
    with cugn.no_grad():
        return float((model(images).numpy().argmax(-1) == labels).mean())


def test_conv_net_with_group_norm_learns_bars():
    rng = np.random.default_rng(0)
    train_x, train_y = bars(256, rng)
    test_x, test_y = bars(200, rng)
    model = Sequential([
        Conv2D(8, 3, padding="same", kernel_initializer=cugn.initializers.GlorotUniform(0)),
        GroupNormalization(groups=2),
        cugn.layers.Activation("relu"),
        MaxPooling2D(),
        GlobalAveragePooling2D(),
        Dense(2, kernel_initializer=cugn.initializers.GlorotUniform(1), kernel_regularizer="l2"),
    ])
    model(train_x[:1])
    optimizer = Adam(model.trainable_weights, lr=0.02)
    before = accuracy(model, test_x, test_y)
    first_losses, last_losses = [], []
    for epoch in range(8):
        order = rng.permutation(len(train_y))
        for first in range(0, len(order), 32):
            batch = order[first:first + 32]
            loss = losses.softmax_cross_entropy(model(train_x[batch]), train_y[batch]) + \
                cugn.regularization_loss(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            (first_losses if epoch == 0 else last_losses).append(loss.item())
    after = accuracy(model, test_x, test_y)
    assert after >= 0.95, (before, after)
    assert np.mean(last_losses[-8:]) < 0.5 * np.mean(first_losses[:8])


def test_mlp_regression_with_sgd_momentum_fits_a_plane():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((128, 3)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0], [0.5]], np.float32) + 0.25).astype(np.float32)
    model = Sequential([Dense(1)])
    model(x[:1])
    optimizer = SGD(model, lr=0.05, momentum=0.9)
    for _ in range(150):
        loss = losses.mean_squared_error(y, model(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    kernel, bias = model.get_weights()
    np.testing.assert_allclose(kernel.ravel(), [1.5, -2.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(bias, [0.25], atol=1e-3)


def test_demo_model_shapes_and_short_run():
    from cugn import demo

    model = demo.build_model(seed=0)
    assert model(np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 10)
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    pytest.importorskip("threadpoolctl")
    assert demo.train(epochs=3, progress=False, device="cpu") >= 0.9


def test_demo_help_reads_like_a_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "cugn.demo", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("usage: python -m cugn.demo [-h] [--epochs N]")
    for option, default in (("--epochs N", "(default: 12)"), ("--batch-size N", "(default: 32)"),
                            ("--lr RATE", "(default: 0.003)"), ("--seed SEED", "(default: 0)"),
                            ("--device DEVICE", "(default: cuda when CuPy sees a GPU"),
                            ("--no-progress", "(default: shown)")):
        line = out[out.index(f"  {option}"):]
        help_text = " ".join(line.split("\n  --")[0].split())
        assert default in help_text, (option, help_text)
    from cugn import demo

    with pytest.raises(SystemExit):
        demo.parser().parse_args(["--epochs", "0"])
