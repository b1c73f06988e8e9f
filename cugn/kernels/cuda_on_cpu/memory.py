"""Device memory on the host: NumPy arrays in allocations aligned to 256 bytes,
as cudaMalloc's are, between guard zones that are checked after every launch.
Fresh memory is all one bits (NaN in every float type), so that a value a
kernel forgot to write shows."""

import types

import numpy as np

ALIGNMENT = 256
GUARD_BYTES = 256  # before and after each allocation's data
CANARY = 0xA5
UNWRITTEN = 0xFF


class DeviceArray(np.ndarray):
    """A NumPy array in device memory, with the attributes of a CuPy array that
    cugn's host code reads (``device``, ``data.ptr``)."""

    @property
    def device(self):
        return allocation_of(self).device

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


class Allocation:
    """One allocation: its bytes, and where its data lie among them."""

    def __init__(self, device, nbytes):
        self.device = device
        self.nbytes = nbytes
        padded = -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT
        raw = np.empty(padded + 2 * GUARD_BYTES + ALIGNMENT, np.uint8)
        start = -raw.ctypes.data % ALIGNMENT
        self.raw = raw[start:start + padded + 2 * GUARD_BYTES]
        self.raw.fill(CANARY)
        self.data = self.raw[GUARD_BYTES:GUARD_BYTES + nbytes].view(DeviceArray)
        self.data.fill(UNWRITTEN)
        self.data._allocation = self  # every view of the data keeps this alive
        self.begin = self.data.ctypes.data
        self.end = self.begin + nbytes
        self._guards = (slice(0, GUARD_BYTES), slice(GUARD_BYTES + nbytes, None))

    @property
    def bounds(self):
        """Data begin and end, guarded begin and end."""
        guarded = self.raw.ctypes.data
        return self.begin, self.end, guarded, guarded + self.raw.size

    def damaged_guard(self):
        """The offset of the first damaged guard byte from the data's start, or None."""
        for zone in self._guards:
            bad = np.flatnonzero(self.raw[zone] != CANARY)
            if bad.size:
                return int(zone.start + bad[0]) - GUARD_BYTES
        return None


def allocation_of(array):
    """The Allocation holding ``array``'s data, or None for host memory."""
    while array is not None:
        allocation = getattr(array, "_allocation", None)
        if allocation is not None:
            return allocation
        array = array.base
    return None


def allocate(device, shape, dtype):
    """A fresh device array (every byte all ones) of ``device``."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    allocation = Allocation(device, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    device.allocations.add(allocation)
    return allocation.data.view(dtype).reshape(shape)
