"""The process group: which process this is, how many there are, and the transports.

Processes are started by an MPI launcher (``mpiexec -n 4 python train.py``), and
MPI (through mpi4py) is the group's transport: it reduces CPU arrays, and
shares NCCL's unique id when CUDA arrays go through NCCL. A process that no MPI
launcher started is a world of one, which needs neither mpi4py nor MPI.
"""

import os
import socket
import sys

from .. import backend

BACKENDS = ("mpi", "nccl")

_group = None  # the ProcessGroup once init_process_group() ran
_previous_excepthook = None  # what destroy_process_group() puts back

# What MPI launchers put in each process's environment: the size of the world
# (MPICH's and Intel MPI's Hydra, Open MPI), or a rank that only a launch sets (PMIx).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_LAUNCH_VARIABLES = ("PMIX_RANK",)


def launched_world_size(environ=None):
    """The number of processes an MPI launcher started, from the environment: None
    when none started this process, 0 when one did but did not say how many."""
    environ = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            if not value.isdigit():
                raise RuntimeError(f"the MPI launcher set {name}={value!r}, not a number")
            return int(value)
    if any(name in environ for name in _LAUNCH_VARIABLES):
        return 0
    return None


def nccl_usable(everyone):
    """Whether NCCL can join the ranks described by ``everyone``, one ``(NCCL loaded,
    host, CUDA device)`` per rank: NCCL on every rank, and a device of its own for each."""
    places = {(host, device) for _, host, device in everyone}
    return all(loaded for loaded, _, _ in everyone) and len(places) == len(everyone)


class ProcessGroup:
    """The world: ``rank``, ``size``, ``local_rank`` (among the ranks on this host),
    MPI's communicator (None in a world of one) and the NCCL communicator, made at the
    first CUDA collective that goes through it."""

    def __init__(self, backend_name, comm):
        self.backend = backend_name
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        self.local_rank = 0 if comm is None else _local_rank(comm)
        self._mpi = None
        self._nccl = None
        self._cuda_over_nccl = None  # with backend None: decided at the first CUDA collective

    def transport_for(self, array):
        """The transport that reduces ``array``: MPI for CPU arrays; for CUDA arrays NCCL
        with backend "nccl", MPI (staged through the host) with "mpi", and with None NCCL
        where every rank has it and a device of its own, else MPI."""
        if not backend.is_cupy_array(array) or self.backend == "mpi":
            return self.mpi()
        if self.backend == "nccl":
            return self.nccl()
        if self._cuda_over_nccl is None:
            self._cuda_over_nccl = self.size > 1 and nccl_usable(
                self.allgather_object(_cuda_place()))
        return self.nccl() if self._cuda_over_nccl else self.mpi()

    def mpi(self):
        if self._mpi is None:
            from .mpi_transport import MpiTransport, SingleProcessTransport

            self._mpi = SingleProcessTransport() if self.comm is None else MpiTransport(self.comm)
        return self._mpi

    def nccl(self):
        # Every rank reaches its first CUDA collective together, so making the
        # communicator there (itself a collective) is safe.
        if self._nccl is None:
            from .nccl_transport import NcclTransport

            self._nccl = NcclTransport(self.comm, self.rank, self.size)
        return self._nccl

    def allgather_object(self, value):
        """Every rank's ``value``, in rank order (pickled over MPI)."""
        return [value] if self.comm is None else self.comm.allgather(value)

    def barrier(self):
        if self.comm is not None:
            self.comm.Barrier()

    def close(self):
        if self._nccl is not None:
            self._nccl.close()
        if self.comm is not None:
            self.comm.Free()


def _local_rank(comm):
    from mpi4py import MPI

    host = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return host.Get_rank()
    finally:
        host.Free()


def _cuda_place():
    from cupy.cuda import nccl

    return bool(nccl.available), socket.gethostname(), backend.cupy().cuda.Device().id


def init_process_group(backend=None, world_size=None):
    """Join the processes that an MPI launcher started (``mpiexec -n N python ...``).

    ``backend`` says how CUDA arrays are reduced: "nccl" (CuPy's NCCL, checked
    now), "mpi" (MPI for every array; CUDA arrays go through the host), or None:
    NCCL where every rank has it and a CUDA device of its own, MPI otherwise; CPU
    arrays always go through MPI. ``world_size``, if given, is the number of
    processes expected: a process that no launcher started is a world of one, and
    expecting more is an error. In a launched world, an uncaught exception in any
    rank aborts all of them (MPI_Abort), so that the others fail instead of
    waiting for it forever.
    """
    global _group
    if backend not in (None,) + BACKENDS:
        raise ValueError(f"backend must be None, 'mpi' or 'nccl', got {backend!r}")
    if world_size is not None and (isinstance(world_size, bool) or not isinstance(world_size, int)
                                   or world_size < 1):
        raise ValueError(f"world_size must be None or an int >= 1, got {world_size!r}")
    if _group is not None:
        raise RuntimeError("the process group is already initialized; call "
                           "destroy_process_group() before initializing it again")
    if backend == "nccl":
        _require_nccl()
    launched = launched_world_size()
    if launched is None:
        if world_size not in (None, 1):
            raise RuntimeError(
                f"world_size={world_size} but no MPI launcher started this process (a world "
                f"of one): run it as mpiexec -n {world_size} python ...")
        _group = ProcessGroup(backend, None)
        return
    comm = _mpi_world(launched)
    if world_size is not None and comm.Get_size() != world_size:
        size = comm.Get_size()
        comm.Free()
        raise RuntimeError(f"world_size={world_size} but the MPI launcher started {size} "
                           f"processes")
    _abort_all_on_uncaught_exception(comm)
    _group = ProcessGroup(backend, comm)


def _require_nccl():
    cupy = backend.cupy()
    from cupy.cuda import nccl

    if not nccl.available:
        raise RuntimeError("backend='nccl' needs NCCL, which CuPy could not load: pip install "
                           "nvidia-nccl-cu13 (or nvidia-nccl-cu12, as CuPy's CUDA), or use "
                           f"backend='mpi' (CuPy {cupy.__version__})")


def _mpi_world(launched):
    try:
        from mpi4py import MPI
    except ImportError as error:
        count = f"{launched} processes" if launched else "this process"
        raise RuntimeError(f"an MPI launcher started {count}, but mpi4py is not installed: "
                           "pip install 'cugn[distributed]'") from error
    # A duplicate, so that cugn's messages never meet the user's own on COMM_WORLD.
    return MPI.COMM_WORLD.Dup()


def _abort_all_on_uncaught_exception(comm):
    """Print the traceback as usual, then abort every rank (as ``python -m mpi4py`` does):
    a rank that dies in Python would otherwise leave the others blocked in a collective."""
    global _previous_excepthook
    previous = _previous_excepthook = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        comm.Abort(1)

    sys.excepthook = hook


def group():
    """The process group; a clear error before ``init_process_group()``."""
    if _group is None:
        raise RuntimeError("the process group is not initialized: call "
                           "cugn.distributed.init_process_group() first")
    return _group


def is_initialized():
    return _group is not None


def get_rank():
    """This process's rank, 0 to ``get_world_size() - 1``."""
    return group().rank


def get_world_size():
    return group().size


def get_local_rank():
    """This process's rank among those on its host: ``cuda:{local rank}`` is the usual
    device of a rank on a host with a GPU per rank."""
    return group().local_rank


def barrier():
    """Wait until every rank has reached this call."""
    group().barrier()


def destroy_process_group():
    """Release the communicators; ``init_process_group()`` may be called again."""
    global _group, _previous_excepthook
    current, _group = group(), None
    if _previous_excepthook is not None:
        sys.excepthook, _previous_excepthook = _previous_excepthook, None
    current.close()
