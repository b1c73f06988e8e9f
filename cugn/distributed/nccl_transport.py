"""NCCL as a transport for CUDA arrays (CuPy's bindings), on a stream of its own.

The unique id that joins the ranks' communicators is made on rank 0 and
broadcast over MPI. Reductions run on the communication stream, ordered with
the compute stream by events, never by waiting on the host::

    compute stream   ..writes the bucket..  record(ready)               wait(done)  ..reads it..
    comm stream                             wait(ready)  allReduce  record(done)

so the kernels queued after a reduction's start (the rest of the backward) run
while NCCL works, and whatever reads the result is queued after it.
"""

import numpy as np

from .. import backend

# The NCCL data types of the dtypes cugn reduces (CuPy has no bfloat16 arrays).
NCCL_DTYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}


def nccl_dtype_name(dtype):
    """The name of the NCCL data type for ``dtype``; a clear error for any other."""
    name = np.dtype(dtype).name
    if name not in NCCL_DTYPES:
        raise TypeError(f"NCCL reduces float16, float32 and float64 arrays, got dtype {name}")
    return NCCL_DTYPES[name]


class PendingOnStream:
    """A collective queued on the communication stream; ``wait()`` orders the compute
    stream after it (the host does not wait). Holds the array until then, so that its
    memory is not reused while NCCL may still write it."""

    def __init__(self, compute_stream, done, array):
        self.compute_stream = compute_stream
        self.done = done
        self.array = array

    def poll(self):
        """Nothing to do: the GPU moves NCCL's work on by itself."""

    def wait(self):
        if self.done is not None:
            self.compute_stream.wait_event(self.done)
            self.done = self.array = None


def launch_after(compute_stream, comm_stream, make_event, launch, array):
    """Queue ``launch()`` (which enqueues on ``comm_stream``) after all the work queued so
    far on ``compute_stream``; the returned handle's ``wait()`` orders the compute stream
    after it."""
    ready = make_event()
    ready.record(compute_stream)
    comm_stream.wait_event(ready)
    launch()
    done = make_event()
    done.record(comm_stream)
    return PendingOnStream(compute_stream, done, array)


class NcclTransport:
    """One NCCL communicator on the current CUDA device, for every rank of the world."""

    def __init__(self, comm, rank, size):
        cupy = backend.cupy()
        from cupy.cuda import nccl

        if not nccl.available:
            raise RuntimeError("CUDA arrays go through NCCL, which CuPy could not load: pip "
                               "install nvidia-nccl-cu13 (or -cu12, as CuPy's CUDA), or pass "
                               "backend='mpi' to init_process_group")
        self.cupy = cupy
        self.nccl = nccl
        unique_id = nccl.get_unique_id() if rank == 0 else None
        if comm is not None:
            unique_id = comm.bcast(unique_id, root=0)
        self.device = cupy.cuda.Device().id
        self.comm = nccl.NcclCommunicator(size, unique_id, rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def _checked(self, array):
        if array.device.id != self.device:
            raise ValueError(f"the NCCL communicator is on cuda:{self.device}, the array on "
                             f"cuda:{array.device.id}: make each rank's device current "
                             "before its first CUDA collective")
        return getattr(self.nccl, nccl_dtype_name(array.dtype))

    def _queue(self, array, collective):
        dtype = self._checked(array)
        pointer = array.data.ptr
        return launch_after(self.cupy.cuda.get_current_stream(), self.stream, self._event,
                            lambda: collective(pointer, array.size, dtype), array)

    def _event(self):
        return self.cupy.cuda.Event(disable_timing=True)  # for ordering only

    def all_reduce_start(self, array):
        """Queue the in-place sum of the C-contiguous ``array`` over all ranks."""
        return self._queue(array, lambda pointer, count, dtype: self.comm.allReduce(
            pointer, pointer, count, dtype, self.nccl.NCCL_SUM, self.stream.ptr))

    def broadcast(self, array, src):
        """Overwrite ``array`` with rank ``src``'s, in stream order."""
        self._queue(array, lambda pointer, count, dtype: self.comm.broadcast(
            pointer, pointer, count, dtype, src, self.stream.ptr)).wait()

    def close(self):
        self.comm.destroy()
