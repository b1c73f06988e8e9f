"""A small custom training loop with GroupNormalization: ``python -m cugn.demo``.

A two-layer network with a GroupNorm between the layers learns to tell three
interleaved spirals apart, trained by plain mini-batch SGD written out by hand
on cugn's tape. It prints the loss and accuracy per epoch, then the accuracy
on held-out points.
"""

import argparse
import time

import numpy as np

import cugn
from cugn import initializers
from cugn.layers import GroupNormalization


def spirals(points_per_class, classes=3, noise=0.2, seed=0):
    """Points on ``classes`` interleaved spiral arms, with their arm as the label."""
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.05, 1.0, points_per_class), classes)
    labels = np.repeat(np.arange(classes), points_per_class)
    angle = labels * 2 * np.pi / classes + radius * 4 + rng.normal(0, noise, radius.size)
    points = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    order = rng.permutation(labels.size)
    return points[order].astype(np.float32), labels[order]


class SpiralNet:
    """Dense -> GroupNormalization -> ReLU -> Dense."""

    def __init__(self, hidden=64, groups=8, classes=3, seed=0):
        self.w1 = cugn.Parameter(initializers.GlorotUniform(seed)((2, hidden)), name="w1")
        self.b1 = cugn.Parameter(np.zeros(hidden, np.float32), name="b1")
        self.norm = GroupNormalization(groups=groups)
        self.w2 = cugn.Parameter(initializers.GlorotUniform(seed + 1)((hidden, classes)),
                                 name="w2")
        self.b2 = cugn.Parameter(np.zeros(classes, np.float32), name="b2")

    def __call__(self, x):
        hidden = self.norm(x @ self.w1 + self.b1).relu()
        return hidden @ self.w2 + self.b2

    @property
    def parameters(self):
        return [self.w1, self.b1, *self.norm.trainable_weights, self.w2, self.b2]


def cross_entropy(logits, labels):
    """Mean negative log-likelihood of integer ``labels`` under softmax(``logits``)."""
    log_probs = logits.log_softmax(axis=-1)
    return -log_probs[np.arange(labels.size), labels].mean()


def accuracy(model, points, labels):
    with cugn.no_grad():
        predicted = model(points).numpy().argmax(axis=-1)
    return float((predicted == labels).mean())


def train(epochs=30, batch_size=64, learning_rate=0.2, seed=0):
    points, labels = spirals(400, seed=seed)
    split = int(0.8 * labels.size)
    train_x, train_y = points[:split], labels[:split]
    test_x, test_y = points[split:], labels[split:]
    model = SpiralNet(seed=seed)
    rng = np.random.default_rng(seed)
    print(f"training on {split} spiral points, testing on {labels.size - split}")
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(split)
        losses = []
        for first in range(0, split, batch_size):
            batch = order[first:first + batch_size]
            loss = cross_entropy(model(train_x[batch]), train_y[batch])
            for p in model.parameters:
                p.grad = None
            loss.backward()
            with cugn.no_grad():
                for p in model.parameters:
                    p.data = p.data - learning_rate * p.grad.data
                    p.apply_constraint()
            losses.append(loss.item())
        if epoch == 1 or epoch % 5 == 0:
            print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  "
                  f"train accuracy {accuracy(model, train_x, train_y):.3f}")
    print(f"trained in {time.perf_counter() - start:.1f} s")
    test_accuracy = accuracy(model, test_x, test_y)
    print(f"test accuracy: {test_accuracy:.3f}")
    return test_accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
