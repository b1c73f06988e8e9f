"""Train a small convolutional network with GroupNorm on handwritten digits:
``python -m cugn.demo``.

The 8x8 digit images that ship inside scikit-learn (1797 of them, 10 classes)
are split into training and held-out test images. A Conv2D -> GroupNorm ->
ReLU stack, pooled and classified by a Dense layer, is trained by a custom
loop on cugn's tape with Adam: forward, cross-entropy plus the weights'
regularization, backward, step. It runs on the GPU when CuPy and a CUDA device
are present, else on the CPU, shows a progress bar per epoch, then prints the
test accuracy and where the time went. Needs the ``[demo]`` extra
(scikit-learn, tqdm, threadpoolctl). Under ``mpiexec -n N`` (the
``[distributed]`` extra) it trains data-parallel: see ``cugn.demo_parallel``.
"""

import argparse
import time

import numpy as np

import cugn
from cugn import backend
from cugn.demo_parallel import Replicas
from cugn.layers import Conv2D, Dense, Flatten, GroupNormalization, MaxPooling2D, Sequential
from cugn.optim import Adam


def default_device():
    """"cuda" when CuPy can see a CUDA device, else "cpu"."""
    return "cuda" if backend.cuda_available() else "cpu"


def load_digits(seed):
    """(train_x, train_y, test_x, test_y): NHWC float32 images in [0, 1], 20% held out."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=seed)
    return train_x, train_y, test_x, test_y


def build_model(seed):
    """Two Conv2D -> GroupNorm -> ReLU blocks, max pooling, and a Dense classifier."""
    def init(offset):
        return cugn.initializers.GlorotUniform(seed + offset)

    return Sequential([
        Conv2D(16, 3, padding="same", kernel_initializer=init(0)),
        GroupNormalization(groups=4),
        cugn.layers.Activation("relu"),
        Conv2D(32, 3, padding="same", kernel_initializer=init(1), kernel_regularizer="l2"),
        GroupNormalization(groups=8),
        cugn.layers.Activation("relu"),
        MaxPooling2D(2),
        Flatten(),
        Dense(10, kernel_initializer=init(2), kernel_regularizer="l2"),
    ])


class PhaseTimer:
    """Wall time per phase of a step; on the GPU it waits for the device at each
    boundary, so that each phase is charged for its own kernels."""

    def __init__(self, device):
        self.totals = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self.synchronize = (backend.cupy().cuda.Device().synchronize
                            if device != "cpu" else lambda: None)
        self.last = None

    def start(self):
        self.synchronize()
        self.last = time.perf_counter()

    def charge(self, phase):
        self.synchronize()
        now = time.perf_counter()
        self.totals[phase] += now - self.last
        self.last = now

    def report(self):
        total = sum(self.totals.values())
        return "  ".join(f"{phase} {seconds:.2f} s ({100 * seconds / total:.0f}%)"
                         for phase, seconds in self.totals.items())


def accuracy(model, images, labels, batch_size=512):
    correct = 0
    with cugn.no_grad():
        for first in range(0, len(labels), batch_size):
            logits = model(images[first:first + batch_size]).numpy()
            correct += int((logits.argmax(axis=-1) == labels[first:first + batch_size]).sum())
    return correct / len(labels)


def train(epochs=12, batch_size=32, learning_rate=3e-3, seed=0, device=None, progress=True):
    """Train and return the accuracy on the held-out images."""
    from threadpoolctl import threadpool_limits

    # The matrices here are small (at most 144 deep): one BLAS thread beats several,
    # whose hand-offs cost more than the work, and far more on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return _train(epochs, batch_size, learning_rate, seed, device, progress)


def _train(epochs, batch_size, learning_rate, seed, device, progress):
    from tqdm import tqdm

    replicas = Replicas()  # one process, or those that mpiexec started
    device = replicas.device(backend.parse_device(device or default_device()))
    train_x, train_y, test_x, test_y = load_digits(seed)
    replicas.print(f"digits: {len(train_y)} training and {len(test_y)} test images of 8x8, "
                   f"on {device}{replicas.describe()}")
    train_x, test_x = backend.to_device(train_x, device), backend.to_device(test_x, device)
    model = build_model(seed)
    model(train_x[:1])  # builds the weights on the data's device
    model = replicas.wrap(model)
    optimizer = Adam(model.trainable_weights, lr=learning_rate)
    timer = PhaseTimer(device)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train_y))
        batches = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch:2d}/{epochs}",
                       unit="batch", leave=False, disable=not (progress and replicas.main))
        running = []
        for first in batches:
            batch = order[first:first + batch_size]
            mine = replicas.share(batch)
            timer.start()
            logits = model(train_x[backend.to_device(mine, device)], training=True)
            loss = replicas.loss(logits, train_y[mine], len(batch)) + \
                cugn.regularization_loss(model)
            timer.charge("forward")
            optimizer.zero_grad()
            loss.backward()
            timer.charge("backward")
            optimizer.step()
            timer.charge("optimizer")
            running.append(loss.item())
            batches.set_postfix(loss=f"{np.mean(running[-20:]):.3f}", refresh=False)
        batches.close()
        replicas.print(f"epoch {epoch:2d}/{epochs}  loss {replicas.mean(np.mean(running)):.4f}")
    elapsed = time.perf_counter() - start
    test_accuracy = accuracy(model, test_x, test_y)
    replicas.print(f"trained {epochs} epochs in {elapsed:.1f} s; time per phase: {timer.report()}")
    if replicas.parallel:
        replicas.print(replicas.report(timer.totals["backward"]))
    replicas.print("to profile on a GPU host: nsys profile -t cuda,nvtx python -m cugn.demo")
    replicas.print(f"test accuracy: {test_accuracy:.3f}")
    replicas.close()
    return test_accuracy


def _positive(kind):
    """An argparse type: a number of ``kind`` above zero."""
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    return parse


def parser():
    """The command line of ``python -m cugn.demo``."""
    cli = argparse.ArgumentParser(
        prog="python -m cugn.demo",
        description="Train a small convolutional network with GroupNorm on scikit-learn's 8x8 "
                    "handwritten digits with a hand-written cugn training loop, then print the "
                    "test accuracy and the time spent in forward, backward and the optimizer.",
        epilog="Needs the demo extra: pip install 'cugn[demo]'. On a GPU host, profile it "
               "with: nsys profile -t cuda,nvtx python -m cugn.demo")
    cli.add_argument("--epochs", type=_positive(int), default=12, metavar="N",
                     help="passes over the training images (default: %(default)s)")
    cli.add_argument("--batch-size", type=_positive(int), default=32, metavar="N",
                     help="images per optimizer step (default: %(default)s)")
    cli.add_argument("--lr", type=_positive(float), default=3e-3, metavar="RATE",
                     help="Adam's learning rate (default: %(default)s)")
    cli.add_argument("--seed", type=int, default=0,
                     help="seeds the data split, the weights and the batch order "
                          "(default: %(default)s)")
    cli.add_argument("--device", default=None, metavar="DEVICE",
                     help="cpu, cuda or cuda:N (default: cuda when CuPy sees a GPU, else cpu)")
    cli.add_argument("--no-progress", action="store_true",
                     help="hide the progress bars (default: shown)")
    return cli


def main(argv=None):
    args = parser().parse_args(argv)
    train(args.epochs, args.batch_size, args.lr, args.seed, args.device, not args.no_progress)


if __name__ == "__main__":
    main()
