"""What ``python -m cugn.demo`` does differently under ``mpiexec -n N``: train data-parallel.

Every rank draws the same order of the training images (the same seed), splits
each global batch into N shares and trains on its own under
``cugn.distributed.DataParallel``, with the learning rate of one process: the
gradients averaged over the ranks are the gradient of the whole batch, so the
training is the one process's, N times wider. Only rank 0 prints. Started
without a launcher (or with one process) the demo is unchanged.
"""

import numpy as np

from . import backend, distributed, losses
from .distributed.process_group import launched_world_size


class Replicas:
    """The ranks of the demo's world: one, or those that mpiexec started."""

    def __init__(self):
        self.parallel = (launched_world_size() or 1) > 1
        if self.parallel:
            distributed.init_process_group()
        self.rank = distributed.get_rank() if self.parallel else 0
        self.size = distributed.get_world_size() if self.parallel else 1
        self.main = self.rank == 0
        self.model = None

    def device(self, device):
        """Each rank of a host on a device of its own when there are enough."""
        if not self.parallel or not device.startswith("cuda"):
            return device
        count = backend.cupy().cuda.runtime.getDeviceCount()
        index = distributed.get_local_rank() % count
        backend.cupy().cuda.Device(index).use()
        return f"cuda:{index}"

    def print(self, *args):
        if self.main:
            print(*args, flush=True)

    def describe(self):
        return f"; {self.size} processes, each on its share of every batch" if self.parallel \
            else ""

    def wrap(self, model):
        """The model to train: the model itself, or DataParallel over it."""
        self.model = distributed.DataParallel(model) if self.parallel else model
        return self.model

    def share(self, batch):
        """This rank's part of the global ``batch`` of indices."""
        return np.array_split(batch, self.size)[self.rank] if self.parallel else batch

    def loss(self, logits, labels, batch_size):
        """The cross-entropy whose gradient, averaged over the ranks, is that of the mean
        over the global batch of ``batch_size`` images (shares may differ by one)."""
        if not self.parallel:
            return losses.softmax_cross_entropy(logits, labels)
        return losses.softmax_cross_entropy(logits, labels, reduction="sum") * \
            (self.size / batch_size)

    def mean(self, value):
        """The mean of ``value`` over the ranks (for the printed loss)."""
        if not self.parallel:
            return value
        return float(distributed.all_reduce(np.array([value]), op="mean")[0])

    def report(self, backward_seconds):
        """The time spent starting and waiting for the gradients' reductions, part of
        the ``backward_seconds`` (what the backward's compute did not hide)."""
        seconds = self.model.communication_seconds
        return (f"communication: {seconds:.2f} s on rank 0 starting and waiting for the "
                f"gradients' all-reduce ({100 * seconds / backward_seconds:.0f}% of backward)")

    def close(self):
        if self.parallel:
            distributed.destroy_process_group()
