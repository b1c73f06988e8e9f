"""Data-parallel training over several processes: MPI (mpi4py) launches them and
reduces CPU arrays, NCCL (CuPy's bindings) reduces CUDA arrays.

Run a script under an MPI launcher, ``mpiexec -n 4 python train.py``; inside it::

    from cugn import distributed as dist

    dist.init_process_group()                 # a world of one without a launcher
    model = dist.DataParallel(model)          # rank 0's weights everywhere
    sampler = dist.DistributedSampler(len(dataset), shuffle=True, seed=0)
    ...
    loss.backward()                           # returns with every .grad averaged

Needs the ``[distributed]`` extra (mpi4py and MPICH) in a launched world.
"""

from .collectives import all_reduce, broadcast
from .data_parallel import DataParallel
from .process_group import (barrier, destroy_process_group, get_local_rank, get_rank,
                            get_world_size, init_process_group, is_initialized)
from .sampler import DistributedSampler

__all__ = ["DataParallel", "DistributedSampler", "all_reduce", "barrier", "broadcast",
           "destroy_process_group", "get_local_rank", "get_rank", "get_world_size", "init_process_group",
           "is_initialized"]
