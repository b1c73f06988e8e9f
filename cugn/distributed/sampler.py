"""``DistributedSampler``: each rank's share of a dataset's indices, per epoch."""

import math

import numpy as np

from .process_group import is_initialized, get_rank, get_world_size


def _count(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class DistributedSampler:
    """The indices of ``dataset`` (its length, or anything with ``len()``) that rank
    ``rank`` of ``num_replicas`` reads in an epoch, as PyTorch's sampler gives them:
    with ``shuffle``, a permutation drawn from ``seed + epoch``, the same on every rank
    (call ``set_epoch(epoch)`` before each epoch for a new one); then every rank takes
    every ``num_replicas``-th index from its rank on. When the size is not a multiple
    of ``num_replicas``, ``drop_last`` drops the indices left over, else the first
    indices are repeated to make it one, so that every rank has as many.
    ``num_replicas`` and ``rank`` default to the process group's."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        size = dataset if isinstance(dataset, (int, np.integer)) and not isinstance(
            dataset, bool) else None
        if size is None:
            if not hasattr(dataset, "__len__"):
                raise TypeError(f"dataset must be a size or have a len(), got "
                                f"{type(dataset).__name__}")
            size = len(dataset)
        self.dataset_size = _count(size, "dataset size", 0)
        if num_replicas is None:
            num_replicas = get_world_size() if is_initialized() else 1
        if rank is None:
            rank = get_rank() if is_initialized() else 0
        self.num_replicas = _count(num_replicas, "num_replicas", 1)
        self.rank = _count(rank, "rank", 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank must be below num_replicas={self.num_replicas}, got {rank!r}")
        self.shuffle = bool(shuffle)
        self.seed = _count(seed, "seed", 0)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.dataset_size // self.num_replicas
        else:
            self.num_samples = math.ceil(self.dataset_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        """Draw the next ``__iter__``'s order from ``seed + epoch``."""
        self.epoch = _count(epoch, "epoch", 0)

    def indices(self):
        """This rank's indices for the current epoch, as an int64 array."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.dataset_size)
        else:
            order = np.arange(self.dataset_size)
        if self.total_size > self.dataset_size:  # padding: repeat from the start, cyclically
            order = np.resize(order, self.total_size)
        order = order[:self.total_size]
        return order[self.rank::self.num_replicas].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples
