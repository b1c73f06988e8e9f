"""Checks that run inside an MPI world: ``mpiexec -n N python distributed_checks.py
OUT_DIR CHECK...``, started by test_distributed.py.

Every rank runs the named checks in order and writes ``OUT_DIR/rank<r>.json``:
each check's name mapped to "ok" or the traceback of its failure. A check runs
the same collectives on every rank, and compares after them, so that a failed
comparison on one rank leaves the others free to go on to the next check.
"""

import json
import os
import sys
import traceback

import numpy as np

import cugn
from cugn import distributed as dist
from cugn.layers import Conv2D, Dense, Flatten, GroupNormalization, Layer, Sequential
from cugn.losses import softmax_cross_entropy
from cugn.optim import SGD, Adam

DTYPES = ("float16", "float32", "float64")


def _rank_array(rank, dtype, shape=(5, 7)):
    """Rank ``rank``'s data: small integers, whose float16 sums over a few ranks are exact,
    plus a fraction in the wider dtypes."""
    rng = np.random.default_rng(100 + rank)
    values = rng.integers(-8, 9, size=shape).astype(dtype)
    if dtype != "float16":
        values += rng.random(shape).astype(dtype)
    return values


def _same_on_every_rank(array):
    """Whether every rank holds the same bits."""
    mine = np.ascontiguousarray(array).tobytes()
    return all(theirs == mine for theirs in dist.process_group.group().allgather_object(mine))


def check_collectives():
    rank, size = dist.get_rank(), dist.get_world_size()
    assert dist.get_local_rank() == rank   # one host
    for dtype in DTYPES:
        everyone = [_rank_array(r, dtype) for r in range(size)]
        expected = np.sum(np.stack(everyone).astype(np.float64), axis=0)
        tolerance = {"float16": 0, "float32": 1e-6, "float64": 1e-15}[dtype]

        summed = dist.all_reduce(cugn.tensor(everyone[rank], dtype=dtype))
        assert summed.dtype == dtype
        np.testing.assert_allclose(summed.numpy(), expected, rtol=tolerance, atol=tolerance)
        assert _same_on_every_rank(summed.numpy()), dtype

        mean = dist.all_reduce(everyone[rank].copy(), op="mean")      # a plain array
        np.testing.assert_allclose(mean, expected / size, rtol=max(tolerance, 1e-3 if
                                   dtype == "float16" else 0), atol=tolerance)
        assert _same_on_every_rank(mean), dtype

        wide = np.zeros((5, 14), dtype)
        wide[:, ::2] = everyone[rank]                                  # not contiguous
        dist.all_reduce(wide[:, ::2])
        np.testing.assert_allclose(wide[:, ::2], expected, rtol=tolerance, atol=tolerance)
        assert not wide[:, 1::2].any(), "the values between the strided ones changed"

        empty = dist.all_reduce(np.zeros((0, 3), dtype))
        assert empty.shape == (0, 3)

        src = size - 1
        shared = dist.broadcast(cugn.tensor(everyone[rank], dtype=dtype), src=src)
        np.testing.assert_array_equal(shared.numpy(), everyone[src])
    dist.barrier()


def _model(seed, dtype="float64"):
    """Conv2D -> GroupNormalization -> Flatten -> Dense, built on 6x6 single-channel images."""
    init = cugn.initializers.GlorotUniform
    model = Sequential([
        Conv2D(4, 3, kernel_initializer=init(seed), bias_initializer=init(seed + 1), dtype=dtype),
        GroupNormalization(groups=2, beta_initializer=init(seed + 2),
                           gamma_initializer=init(seed + 3), dtype=dtype),
        Flatten(dtype=dtype),
        Dense(3, kernel_initializer=init(seed + 4), kernel_regularizer="l2", dtype=dtype),
    ])
    model(np.zeros((1, 6, 6, 1), dtype))
    return model


def _batch(size=6):
    rng = np.random.default_rng(7)
    return rng.random((size, 6, 6, 1)), rng.integers(0, 3, size)


def _step(model, optimizer, images, labels):
    loss = softmax_cross_entropy(model(images), labels) + cugn.regularization_loss(model)
    optimizer.zero_grad()
    loss.backward()
    grads = [w.grad.numpy().copy() for w in model.trainable_weights]
    optimizer.step()
    return grads


def _check_training(make_optimizer):
    """Per-rank shares of a global batch under DataParallel give, step by step, the
    gradients and weights of one process training on the whole batch; the ranks start
    from different weights (their own seeds) and hold the same bits at every step."""
    rank, size = dist.get_rank(), dist.get_world_size()
    images, labels = _batch()
    share = np.array_split(np.arange(len(labels)), size)[rank]
    parallel = dist.DataParallel(_model(seed=10 * rank), bucket_cap_mb=1e-4)
    whole = _model(seed=0)             # rank 0's initial weights, which DataParallel shares
    parallel_optimizer = make_optimizer(parallel)
    whole_optimizer = make_optimizer(whole)
    for step in range(3):
        grads = _step(parallel, parallel_optimizer, images[share], labels[share])
        expected_grads = _step(whole, whole_optimizer, images, labels)
        for weight, grad, expected in zip(whole.trainable_weights, grads, expected_grads):
            np.testing.assert_allclose(grad, expected, rtol=1e-11, atol=1e-14,
                                       err_msg=f"step {step}: gradient of {weight.name}")
        for weight, expected in zip(parallel.weights, whole.weights):
            np.testing.assert_allclose(weight.numpy(), expected.numpy(), rtol=1e-11,
                                       atol=1e-14, err_msg=f"step {step}: {weight.name}")
            assert _same_on_every_rank(weight.numpy()), f"step {step}: {weight.name}"


def check_data_parallel_sgd():
    _check_training(lambda model: SGD(model.trainable_weights, lr=0.1, momentum=0.9))


def check_data_parallel_adam():
    _check_training(lambda model: Adam(model.trainable_weights, lr=0.01))


def check_uneven_shares():
    """Shares that differ in size, an empty one included (2 images over 3 ranks): scaling
    each rank's summed loss by world size / global batch makes the averaged gradient the
    mean over the whole batch."""
    rank, size = dist.get_rank(), dist.get_world_size()
    for batch_size in (7, 2):
        images, labels = _batch(batch_size)
        share = np.array_split(np.arange(batch_size), size)[rank]
        parallel = dist.DataParallel(_model(seed=0))
        whole = _model(seed=0)
        loss = softmax_cross_entropy(parallel(images[share]), labels[share], reduction="sum")
        (loss * (size / batch_size)).backward()
        softmax_cross_entropy(whole(images), labels).backward()
        for got, expected in zip(parallel.trainable_weights, whole.trainable_weights):
            np.testing.assert_allclose(got.grad.numpy(), expected.grad.numpy(), rtol=1e-11,
                                       atol=1e-14, err_msg=f"batch of {batch_size}: {got.name}")


class _Reached(Layer):
    """An identity layer that notes when the backward reaches it."""

    def __init__(self, events):
        super().__init__()
        self.events = events

    def call(self, inputs):
        outputs = inputs * 1.0
        outputs.register_hook(lambda grad: self.events.append("backward reached conv2d"))
        return outputs


def check_overlap():
    """With a bucket per weight, the buckets of the later layers start reducing before
    the backward reaches the first layer; the first layer's weights come last."""
    events = []
    init = cugn.initializers.GlorotUniform
    model = Sequential([Conv2D(4, 3, kernel_initializer=init(0)), _Reached(events),
                        GroupNormalization(groups=2), Conv2D(4, 3, kernel_initializer=init(1)),
                        Flatten(), Dense(3, kernel_initializer=init(2))])
    model(np.zeros((1, 6, 6, 1), np.float32))
    parallel = dist.DataParallel(model, bucket_cap_mb=1e-6)
    reducer = parallel.reducer
    assert len(reducer.buckets) == len(model.trainable_weights) == 8, reducer.buckets
    launch = reducer._launch

    def noting_launch(number):
        events.append(reducer.buckets[number].indices)
        launch(number)

    reducer._launch = noting_launch
    images, labels = _batch()
    softmax_cross_entropy(parallel(images.astype(np.float32)), labels).backward()
    reached = events.index("backward reached conv2d")
    first_layer = [i for i, param in enumerate(reducer.params)
                   if any(param is w for w in model.layers[0].trainable_weights)]
    assert events[:reached] == [[7], [6], [5], [4], [3], [2]], events   # Dense back to GroupNorm
    assert sorted(events[reached + 1:]) == [[i] for i in first_layer] == [[0], [1]], events


def check_nccl():
    """The NCCL path on one GPU per rank: collectives and one DataParallel step."""
    import cupy

    rank, size = dist.get_rank(), dist.get_world_size()
    cupy.cuda.Device(dist.get_local_rank()).use()  # before the first CUDA collective
    for dtype in DTYPES:
        everyone = [_rank_array(r, dtype) for r in range(size)]
        summed = dist.all_reduce(cupy.asarray(everyone[rank]))
        np.testing.assert_allclose(summed.get(), np.sum(np.stack(everyone).astype(np.float64),
                                                        axis=0), rtol=1e-6)
    images, labels = _batch()
    share = np.array_split(np.arange(len(labels)), size)[rank]
    parallel = dist.DataParallel(_model(seed=10 * rank).to("cuda"), bucket_cap_mb=1e-4)
    whole = _model(seed=0).to("cuda")
    grads = _step(parallel, SGD(parallel.trainable_weights, lr=0.1),
                  cupy.asarray(images[share]), labels[share])
    expected = _step(whole, SGD(whole.trainable_weights, lr=0.1), cupy.asarray(images), labels)
    for grad, want in zip(grads, expected):
        np.testing.assert_allclose(grad, want, rtol=1e-11, atol=1e-14)


def check_cuda_over_mpi():
    """backend="mpi": CUDA arrays staged through the host, the ranks sharing a GPU."""
    import cupy

    rank, size = dist.get_rank(), dist.get_world_size()
    for dtype in DTYPES:
        everyone = [_rank_array(r, dtype) for r in range(size)]
        values = cupy.asarray(everyone[rank]) * 1   # written by a kernel just before
        dist.all_reduce(values)
        np.testing.assert_allclose(values.get(), np.sum(np.stack(everyone).astype(np.float64),
                                                        axis=0), rtol=1e-6)
        shared = dist.broadcast(cupy.asarray(everyone[rank]), src=size - 1)
        np.testing.assert_array_equal(shared.get(), everyone[size - 1])


def fail_on_last_rank():
    """The last rank raises; the others wait for it in a collective."""
    if dist.get_rank() == dist.get_world_size() - 1:
        raise RuntimeError("the last rank fails on purpose")
    dist.all_reduce(np.ones(3))


def main(out_dir, names, backend=None):
    dist.init_process_group(backend=backend)
    if names == ["fail_on_last_rank"]:
        fail_on_last_rank()  # uncaught, as in a user's script
    results = {}
    for name in names:
        try:
            globals()[f"check_{name}"]()
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as file:
        json.dump(results, file)
    dist.destroy_process_group()


if __name__ == "__main__":
    backend = os.environ.get("CUGN_TEST_BACKEND") or None
    main(sys.argv[1], sys.argv[2:], backend)
