"""The bucket plan: which gradients are reduced together, in which order.

One collective per weight would pay MPI's or NCCL's latency dozens of times per
step; one for all of them could start only when the backward is over. Buckets
of a bounded size are the middle way (PyTorch DDP's, ChainerMN's): the weights
are taken from the last to the first, the order in which the backward
completes their gradients, and cut whenever the next one would take a bucket
past the cap. A bucket holds one dtype on one device, since it is reduced as
one flat array.
"""

import numpy as np


class Bucket:
    """Weights ``indices`` (into the list planned), each at ``offsets[i]`` in a flat array
    of ``numel`` elements of ``dtype`` on ``device``."""

    __slots__ = ("indices", "offsets", "numel", "dtype", "device")

    def __init__(self, dtype, device):
        self.indices = []
        self.offsets = []
        self.numel = 0
        self.dtype = dtype
        self.device = device

    @property
    def nbytes(self):
        return self.numel * self.dtype.itemsize

    def add(self, index, numel):
        self.indices.append(index)
        self.offsets.append(self.numel)
        self.numel += numel

    def __repr__(self):
        return (f"Bucket(indices={self.indices}, numel={self.numel}, dtype={self.dtype.name}, "
                f"device={self.device!r})")


def plan_buckets(specs, cap_bytes):
    """Buckets for weights described by ``specs``, ``(numel, dtype, device)`` each in the
    model's order, every bucket at most ``cap_bytes`` unless one weight alone is larger.
    Buckets are listed in the order they are launched: by the time their last weight is
    taken, from the end of the list."""
    if not cap_bytes > 0:
        raise ValueError(f"cap_bytes must be above 0, got {cap_bytes!r}")
    planned = []
    open_buckets = {}  # (dtype, device) -> the bucket being filled
    for index in reversed(range(len(specs))):
        numel, dtype, device = specs[index]
        dtype = np.dtype(dtype)
        key = (dtype, device)
        bucket = open_buckets.get(key)
        if bucket is not None and bucket.numel and \
                (bucket.numel + numel) * dtype.itemsize > cap_bytes:
            planned.append(bucket)
            bucket = None
        if bucket is None:
            bucket = open_buckets[key] = Bucket(dtype, device)
        bucket.add(index, numel)
    # The buckets still open, in the order they were opened.
    planned.extend(sorted(open_buckets.values(), key=lambda b: -b.indices[0]))
    return planned
