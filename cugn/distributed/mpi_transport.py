"""MPI as a transport (mpi4py): nonblocking sums and broadcasts of contiguous arrays.

CPU arrays are handed to MPI as they are. CUDA arrays are staged through host
memory, which every MPI can read (a CUDA-aware MPI could take device pointers,
but whether one is cannot be asked portably; NCCL is the fast path for them).
"""

from .. import backend


class PendingSum:
    """A sum in flight; ``wait()`` returns once the result is in the array. MPI moves a
    nonblocking collective on inside MPI calls (unless it runs a progress thread of its
    own), so ``poll()`` lets it go on between the backward's steps."""

    def __init__(self, request, finish=None):
        self.request = request
        self.finish = finish

    def poll(self):
        if self.request is not None:
            self.request.Test()

    def wait(self):
        if self.request is not None:
            self.request.Wait()
            self.request = None
            if self.finish is not None:
                self.finish()


class MpiTransport:
    def __init__(self, comm):
        from mpi4py import MPI

        self.comm = comm
        self.mpi = MPI

    def all_reduce_start(self, array):
        """Start summing the C-contiguous ``array`` in place over all ranks."""
        if backend.is_cupy_array(array):
            host = array.get()  # waits for the kernels that wrote the array
            request = self.comm.Iallreduce(self.mpi.IN_PLACE, host, op=self.mpi.SUM)
            return PendingSum(request, lambda: array.set(host))
        return PendingSum(self.comm.Iallreduce(self.mpi.IN_PLACE, array, op=self.mpi.SUM))

    def broadcast(self, array, src):
        """Overwrite the C-contiguous ``array`` with rank ``src``'s, on every rank."""
        if backend.is_cupy_array(array):
            host = array.get()
            self.comm.Bcast(host, root=src)
            array.set(host)
        else:
            self.comm.Bcast(array, root=src)


class SingleProcessTransport:
    """A world of one: the sum of one array is itself, and so is its broadcast."""

    def all_reduce_start(self, array):
        return PendingSum(None)

    def broadcast(self, array, src):
        pass
