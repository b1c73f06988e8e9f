"""cugn.distributed: the process group, collectives, DataParallel and the sampler.

The multi-process checks run in worlds of 2 and 3 processes started by
``mpiexec`` (tests/distributed_checks.py runs inside them; one spawn per world
runs several checks, since a spawn costs seconds on a small machine); every
spawn is bounded in time and runs on this host only. The rest runs in this
process, as a world of one, which needs no MPI.
"""

import json
import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time

import numpy as np
import pytest

import cugn
from cugn import distributed as dist
from cugn.distributed import nccl_transport, process_group
from cugn.distributed.buckets import plan_buckets
from cugn.layers import Conv2D, Dense, Flatten, GroupNormalization, Layer, Sequential
from cugn.losses import softmax_cross_entropy
from cugn.optim import SGD

import profiling_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = os.path.join(ROOT, "tests", "distributed_checks.py")
SPAWN_TIMEOUT_S = 120
WORLD_CHECKS = ("collectives", "data_parallel_sgd", "data_parallel_adam", "uneven_shares",
                "overlap")


# ------------------------------------------------------------------ spawning worlds


def _mpiexec():
    """The mpiexec of this Python's environment (the mpich wheel puts it beside python),
    else the first on PATH."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, "mpiexec")
        if os.path.exists(candidate):
            return candidate
    import shutil

    found = shutil.which("mpiexec")
    assert found, "no mpiexec: pip install 'cugn[distributed]' (the test extra has it)"
    return found


def spawn(n, python_args, timeout=SPAWN_TIMEOUT_S, env_update=None):
    """Run ``mpiexec -n n python python_args...``; kill the whole process group if it
    outlives ``timeout``. Returns (returncode, output, seconds)."""
    env = dict(os.environ)
    # The cugn under test, one BLAS thread per rank, and this host only: Hydra's
    # processes talk over the loopback interface, and it ends the job at the timeout.
    env.update(PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", HYDRA_IFACE="lo", MPIEXEC_TIMEOUT=str(timeout))
    env.pop("NVTX_INJECTION64_PATH", None)
    env.update(env_update or {})
    command = [_mpiexec(), "-n", str(n), sys.executable, *python_args]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in {timeout + 10} s:\n{output}")
    return process.returncode, output, time.perf_counter() - start


def run_checks(n, tmp_path, names, env_update=None):
    """Every rank's result of each check: {check: [rank 0's, rank 1's, ...]}."""
    returncode, output, _ = spawn(n, [CHECKS, str(tmp_path), *names], env_update=env_update)
    assert returncode == 0, output
    per_rank = []
    for rank in range(n):
        with open(tmp_path / f"rank{rank}.json") as file:
            per_rank.append(json.load(file))
    return {name: [results[name] for results in per_rank] for name in names}


@pytest.fixture(scope="module", params=[2, 3], ids=["world_of_2", "world_of_3"])
def world(request, tmp_path_factory):
    return run_checks(request.param, tmp_path_factory.mktemp(f"world{request.param}"),
                      WORLD_CHECKS)


def _passed(results):
    failures = [f"rank {rank}:\n{result}" for rank, result in enumerate(results) if result != "ok"]
    assert not failures, "\n".join(failures)


def test_all_reduce_and_broadcast_of_every_dtype_equal_numpy(world):
    _passed(world["collectives"])


def test_data_parallel_sgd_gives_the_weights_of_one_process_on_the_whole_batch(world):
    _passed(world["data_parallel_sgd"])


def test_data_parallel_adam_gives_the_weights_of_one_process_on_the_whole_batch(world):
    _passed(world["data_parallel_adam"])


def test_shares_of_different_sizes_give_the_gradient_of_the_whole_batch(world):
    _passed(world["uneven_shares"])


def test_the_first_buckets_reduce_while_the_backward_goes_on(world):
    _passed(world["overlap"])


def test_a_rank_that_raises_ends_every_rank(tmp_path):
    returncode, output, seconds = spawn(3, [CHECKS, str(tmp_path), "fail_on_last_rank"],
                                        timeout=60)
    assert returncode not in (0, 124, 137), output  # failed, and not by the timeout
    assert seconds < 50, output
    assert "RuntimeError: the last rank fails on purpose" in output
    assert not list(tmp_path.iterdir()), "a rank went on past the failure"


def _epoch_losses(output):
    return [float(line.split()[-1]) for line in output.splitlines() if line.startswith("epoch")]


def test_the_demo_trains_data_parallel_under_mpiexec(capsys):
    for module in ("sklearn", "tqdm", "threadpoolctl"):  # the demo extra
        pytest.importorskip(module)
    from cugn import demo

    returncode, output, _ = spawn(2, ["-m", "cugn.demo", "--epochs", "3", "--no-progress",
                                      "--device", "cpu"])
    assert returncode == 0, output
    demo.train(epochs=3, progress=False, device="cpu")
    alone = capsys.readouterr().out
    # Rank 0 alone prints; the global batch split over two ranks trains as one process.
    assert output.count("test accuracy:") == output.count("digits:") == 1, output
    assert "2 processes, each on its share of every batch" in output
    assert "communication: " in output and "communication: " not in alone
    losses = _epoch_losses(output)
    assert len(losses) == 3
    np.testing.assert_allclose(losses, _epoch_losses(alone), atol=2e-4)
    assert float(output.split("test accuracy:")[1]) >= 0.9


@pytest.mark.gpu
def test_nccl_reduces_cuda_arrays_across_two_gpus(tmp_path):
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices, one per rank")
    results = run_checks(2, tmp_path, ["nccl"], env_update={"CUGN_TEST_BACKEND": "nccl"})
    _passed(results["nccl"])


@pytest.mark.gpu
def test_nccl_in_a_world_of_one_orders_its_stream_with_the_computation(rng):
    import cupy
    from cupy.cuda import nccl

    if not nccl.available:
        pytest.skip("CuPy could not load NCCL (pip install nvidia-nccl-cu13)")
    dist.init_process_group(backend="nccl")
    try:
        for dtype in ("float16", "float32", "float64"):
            values = cupy.asarray(rng.random((64, 65)).astype(dtype))
            # Queued behind a kernel on the compute stream: NCCL must wait for it.
            doubled = values * 2
            dist.all_reduce(doubled, op="mean")
            np.testing.assert_array_equal(doubled.get(), values.get() * 2)
        images = rng.random((4, 6, 6, 1)).astype(np.float32)
        labels = rng.integers(0, 3, 4)
        parallel = dist.DataParallel(_model().to("cuda"), bucket_cap_mb=1e-4)
        weights = _train(parallel, cupy.asarray(images), labels)
        for got, expected in zip(weights, _train(_model().to("cuda"), cupy.asarray(images),
                                                 labels)):
            np.testing.assert_array_equal(got, expected)
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
def test_mpi_reduces_cuda_arrays_through_the_host(tmp_path):
    results = run_checks(2, tmp_path, ["cuda_over_mpi"], env_update={"CUGN_TEST_BACKEND": "mpi"})
    _passed(results["cuda_over_mpi"])


# ------------------------------------------------------------------ a world of one


@pytest.fixture
def world_of_one():
    dist.init_process_group()
    yield
    dist.destroy_process_group()


def test_a_process_no_launcher_started_is_a_world_of_one(world_of_one):
    assert dist.is_initialized()
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (0, 1, 0)
    dist.barrier()
    for dtype in ("float16", "float32", "float64"):
        values = np.arange(6, dtype=dtype).reshape(2, 3)
        tensor = cugn.tensor(values, dtype=dtype)
        assert dist.all_reduce(tensor) is tensor
        np.testing.assert_array_equal(tensor.numpy(), values)
        np.testing.assert_array_equal(dist.all_reduce(values.copy(), op="mean"), values)
        np.testing.assert_array_equal(dist.broadcast(values.copy(), src=0), values)


def test_a_world_of_one_imports_neither_mpi4py_nor_cupy():
    code = ("import sys\n"
            "import numpy as np\n"
            "from cugn import distributed as dist\n"
            "dist.init_process_group()\n"
            "dist.all_reduce(np.ones(2))\n"
            "print(sorted(m for m in ('mpi4py', 'cupy') if m in sys.modules))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, timeout=60).stdout
    assert out.strip() == "[]"


def test_the_group_starts_and_ends_once():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.get_rank()
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.all_reduce(np.ones(2))
    dist.init_process_group()
    with pytest.raises(RuntimeError, match="already initialized"):
        dist.init_process_group()
    dist.destroy_process_group()
    assert not dist.is_initialized()
    dist.init_process_group(backend="mpi", world_size=1)
    dist.destroy_process_group()


def test_init_checks_its_arguments_and_the_launch(monkeypatch):
    with pytest.raises(ValueError, match="backend must be None, 'mpi' or 'nccl', got 'gloo'"):
        dist.init_process_group(backend="gloo")
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="world_size must be None or an int >= 1"):
            dist.init_process_group(world_size=bad)
    with pytest.raises(RuntimeError, match=r"world_size=2 but no MPI launcher.*mpiexec -n 2"):
        dist.init_process_group(world_size=2)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match=r"started 2 processes, but mpi4py is not installed"):
        dist.init_process_group()
    assert not dist.is_initialized()


@pytest.mark.parametrize("environ, expected", [
    ({}, None), ({"PMI_SIZE": "4"}, 4), ({"OMPI_COMM_WORLD_SIZE": "3"}, 3),
    ({"PMIX_RANK": "0"}, 0), ({"PMI_SIZE": " 2 ", "PMIX_RANK": "1"}, 2)])
def test_the_launch_is_read_from_the_environment(environ, expected):
    assert process_group.launched_world_size(environ) == expected


def test_a_launch_variable_that_is_not_a_number_is_named():
    with pytest.raises(RuntimeError, match="PMI_SIZE='two'"):
        process_group.launched_world_size({"PMI_SIZE": "two"})


def test_collectives_check_their_arguments(world_of_one):
    with pytest.raises(ValueError, match="op must be 'sum' or 'mean', got 'max'"):
        dist.all_reduce(np.ones(2), op="max")
    with pytest.raises(TypeError, match="dtype float16, float32 or float64, got int64"):
        dist.all_reduce(np.ones(2, np.int64))
    with pytest.raises(TypeError, match="cugn Tensor or a NumPy or CuPy array, got list"):
        dist.all_reduce([1.0, 2.0])
    read_only = np.ones(2)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        dist.all_reduce(read_only)
    for src in (1, -1, 0.0, True):
        with pytest.raises(ValueError, match="src must be a rank from 0 to 0"):
            dist.broadcast(np.ones(2), src=src)


class _World(process_group.ProcessGroup):
    """A group of ``size`` ranks whose CUDA places are given, without MPI or a GPU."""

    def __init__(self, backend_name, size, places=None):
        super().__init__(backend_name, None)
        self.size = size
        self.places = places
        self.nccl = lambda: "nccl"
        self.mpi = lambda: "mpi"

    def allgather_object(self, value):
        return self.places


@pytest.mark.parametrize("backend_name, size, places, cuda_transport", [
    ("nccl", 1, None, "nccl"), ("mpi", 2, None, "mpi"),
    (None, 1, None, "mpi"),                                              # nothing to join
    (None, 2, [(True, "a", 0), (True, "a", 1)], "nccl"),
    (None, 2, [(True, "a", 0), (True, "b", 0)], "nccl"),                 # two hosts
    (None, 2, [(True, "a", 0), (True, "a", 0)], "mpi"),                  # a shared device
    (None, 2, [(True, "a", 0), (False, "a", 1)], "mpi"),                 # a rank without NCCL
])
def test_cuda_arrays_take_nccl_where_every_rank_can(monkeypatch, backend_name, size, places,
                                                    cuda_transport):
    # A stand-in for CuPy's arrays: which transport an array goes to needs no GPU.
    monkeypatch.setattr(process_group.backend, "is_cupy_array", lambda array: array == "cuda")
    monkeypatch.setattr(process_group, "_cuda_place", lambda: "this rank's place")
    world = _World(backend_name, size, places)
    assert world.transport_for("cuda") == cuda_transport
    assert world.transport_for("cuda") == cuda_transport    # decided once
    assert world.transport_for("cpu") == "mpi"


# ------------------------------------------------------------------ DataParallel


def _model(seed=0):
    init = cugn.initializers.GlorotUniform
    model = Sequential([Conv2D(4, 3, kernel_initializer=init(seed)), GroupNormalization(groups=2),
                        Flatten(), Dense(3, kernel_initializer=init(seed + 1))])
    model(np.zeros((1, 6, 6, 1), np.float32))
    return model


def _train(model, images, labels, steps=3):
    optimizer = SGD(model.trainable_weights, lr=0.1, momentum=0.9)
    for _ in range(steps):
        loss = softmax_cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [w.numpy() for w in model.weights]


def test_data_parallel_in_a_world_of_one_is_the_model(world_of_one, rng):
    model = _model()
    parallel = dist.DataParallel(model, bucket_cap_mb=1e-4)
    assert parallel.module is model
    assert all(a is b for a, b in zip(parallel.weights, model.weights))
    assert parallel.trainable_weights and parallel.losses == model.losses
    assert len(parallel.reducer.buckets) > 1
    assert len(dist.DataParallel(_model(), bucket_cap_mb=1e-9).reducer.buckets) == 6
    images, labels = rng.random((4, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 4)
    alone = _model()
    for got, expected in zip(_train(parallel, images, labels), _train(alone, images, labels)):
        np.testing.assert_array_equal(got, expected)
    assert parallel.communication_seconds >= 0


class _TwoHeads(Layer):
    """Two outputs from two weights, and a third weight that no output uses."""

    def build(self, input_shape):
        self.left = self.add_weight("left", (input_shape[-1],), "ones")
        self.right = self.add_weight("right", (input_shape[-1],), "ones")
        self.unused = self.add_weight("unused", (2,), "ones")
        super().build(input_shape)

    def call(self, inputs):
        return inputs * self.left, inputs * self.right


def test_weights_the_forward_did_not_use_are_left_alone(world_of_one):
    model = _TwoHeads()
    model(np.ones((2, 3), np.float32))
    parallel = dist.DataParallel(model)
    left, right = parallel(np.full((2, 3), 2.0, np.float32))
    (left.sum() + right.sum()).backward()
    np.testing.assert_array_equal(model.left.grad.numpy(), [4.0, 4.0, 4.0])
    np.testing.assert_array_equal(model.right.grad.numpy(), [4.0, 4.0, 4.0])
    assert model.unused.grad is None


def test_an_evaluation_between_forward_and_backward_leaves_the_reduction_armed(world_of_one):
    model = _model()
    parallel = dist.DataParallel(model, bucket_cap_mb=1e-6)
    images = np.ones((2, 6, 6, 1), np.float32)
    loss = parallel(images).sum()
    with cugn.no_grad():
        parallel(images)
    loss.backward()
    assert parallel.reducer.launched == len(parallel.reducer.buckets) == 6
    assert parallel.reducer.expected is None     # reduced, and disarmed


def test_a_backward_through_part_of_the_output_is_an_error_at_the_next_forward(world_of_one):
    model = _TwoHeads()
    model(np.ones((2, 3), np.float32))
    parallel = dist.DataParallel(model, bucket_cap_mb=1e-6)  # one bucket per weight
    left, _ = parallel(np.ones((2, 3), np.float32))
    left.sum().backward()                       # "right" never gets its gradient
    with pytest.raises(RuntimeError, match=r"no gradient to weights \['right'\]"):
        parallel(np.ones((2, 3), np.float32))


def test_data_parallel_checks_its_arguments(world_of_one):
    with pytest.raises(TypeError, match="module must be a cugn Layer, got list"):
        dist.DataParallel([])
    with pytest.raises(ValueError, match="no trainable weights yet"):
        dist.DataParallel(Dense(3))
    for bad in (0, -1.0, "25", True):
        with pytest.raises(ValueError, match="bucket_cap_mb must be a number above 0"):
            dist.DataParallel(_model(), bucket_cap_mb=bad)


def test_a_model_is_wrapped_once(world_of_one):
    model = _model()
    dist.DataParallel(model)
    with pytest.raises(ValueError, match="already reduced by a DataParallel"):
        dist.DataParallel(model)


def test_data_parallel_needs_the_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.DataParallel(_model())


# ------------------------------------------------------------------ the bucket plan


def test_buckets_take_the_weights_from_the_last_within_the_cap():
    f32 = np.dtype("float32")
    specs = [(10, f32, "cpu"), (20, f32, "cpu"), (5, f32, "cpu"), (5, f32, "cpu")]
    plan = plan_buckets(specs, cap_bytes=35 * 4)
    assert [b.indices for b in plan] == [[3, 2, 1], [0]]
    assert [b.offsets for b in plan] == [[0, 5, 10], [0]]
    assert [b.numel for b in plan] == [30, 10]
    plan = plan_buckets(specs, cap_bytes=10 * 4)   # 20 alone is past the cap: its own bucket
    assert [b.indices for b in plan] == [[3, 2], [1], [0]]
    assert [b.indices for b in plan_buckets(specs, cap_bytes=1)] == [[3], [2], [1], [0]]
    assert [b.indices for b in plan_buckets(specs, cap_bytes=1 << 30)] == [[3, 2, 1, 0]]


def test_a_bucket_holds_one_dtype_on_one_device():
    specs = [(4, "float32", "cpu"), (4, "float64", "cpu"), (4, "float32", "cuda:0"),
             (4, "float32", "cpu"), (2, "float16", "cpu")]
    plan = plan_buckets(specs, cap_bytes=1 << 20)
    assert [(b.indices, b.dtype.name, b.device) for b in plan] == [
        ([4], "float16", "cpu"), ([3, 0], "float32", "cpu"), ([2], "float32", "cuda:0"),
        ([1], "float64", "cpu")]
    assert plan[1].nbytes == 32


def test_the_bucket_cap_must_be_positive():
    with pytest.raises(ValueError, match="cap_bytes must be above 0, got 0"):
        plan_buckets([(1, "float32", "cpu")], 0)


# ------------------------------------------------------------------ the NCCL path, without a GPU


def test_nccl_data_types():
    assert [nccl_transport.nccl_dtype_name(d) for d in ("float16", "float32", np.float64)] == \
        ["NCCL_FLOAT16", "NCCL_FLOAT32", "NCCL_FLOAT64"]
    with pytest.raises(TypeError, match="got dtype int32"):
        nccl_transport.nccl_dtype_name("int32")


class _Log:
    """Stand-ins for CUDA streams and events that note what is queued where."""

    def __init__(self):
        self.entries = []
        self.events = 0

    def stream(self, name):
        log = self

        class Stream:
            def wait_event(self, event):
                log.entries.append((name, "waits for", event.name))

        return Stream()

    def event(self):
        log = self
        log.events += 1

        class Event:
            name = f"event {log.events}"

            def record(self, stream):
                log.entries.append((stream.name, "records", self.name))

        return Event()


def test_a_collective_is_queued_between_the_compute_streams_events():
    log = _Log()
    compute, comm = log.stream("compute"), log.stream("comm")
    compute.name, comm.name = "compute", "comm"
    pending = nccl_transport.launch_after(compute, comm, log.event,
                                          lambda: log.entries.append(("comm", "allReduce")),
                                          array="bucket")
    assert log.entries == [("compute", "records", "event 1"), ("comm", "waits for", "event 1"),
                           ("comm", "allReduce"), ("comm", "records", "event 2")]
    assert pending.array == "bucket"   # kept alive until the compute stream is ordered after
    log.entries.clear()
    pending.wait()
    pending.wait()                     # once only
    assert log.entries == [("compute", "waits for", "event 2")]
    assert pending.array is None


# ------------------------------------------------------------------ the sampler


def test_the_ranks_share_an_epoch_without_overlap():
    for size in (10, 11, 1):
        shares = [list(dist.DistributedSampler(size, num_replicas=3, rank=r, seed=5))
                  for r in range(3)]
        lengths = {len(share) for share in shares}
        assert lengths == {-(-size // 3)}
        flat = sorted(sum(shares, []))
        assert set(flat) == set(range(size))
        assert len(flat) - size == 3 * lengths.pop() - size   # the padding, repeated indices


def test_drop_last_drops_the_remainder_and_shuffle_follows_seed_and_epoch():
    shares = [dist.DistributedSampler(11, num_replicas=3, rank=r, drop_last=True).indices()
              for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert len(set(np.concatenate(shares).tolist())) == 9
    sampler = dist.DistributedSampler(list(range(20)), num_replicas=2, rank=1, seed=3)
    again = dist.DistributedSampler(20, num_replicas=2, rank=1, seed=3)
    first = sampler.indices()
    np.testing.assert_array_equal(first, again.indices())
    expected = np.random.default_rng(3).permutation(20)[1::2]
    np.testing.assert_array_equal(first, expected)
    sampler.set_epoch(1)
    assert not np.array_equal(sampler.indices(), first)
    in_order = dist.DistributedSampler(5, num_replicas=2, rank=0, shuffle=False)
    assert list(in_order) == [0, 2, 4] and len(in_order) == 3
    assert list(dist.DistributedSampler(0, num_replicas=2, rank=1)) == []


def test_the_sampler_takes_the_process_group_by_default(world_of_one):
    sampler = dist.DistributedSampler(4, shuffle=False)
    assert (sampler.num_replicas, sampler.rank, list(sampler)) == (1, 0, [0, 1, 2, 3])


def test_the_sampler_checks_its_arguments():
    with pytest.raises(TypeError, match="dataset must be a size or have a len"):
        dist.DistributedSampler(object())
    with pytest.raises(ValueError, match="rank must be below num_replicas=2, got 2"):
        dist.DistributedSampler(4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be an int >= 1, got 0"):
        dist.DistributedSampler(4, num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got -1"):
        dist.DistributedSampler(4, num_replicas=1, rank=0).set_epoch(-1)
    with pytest.raises(ValueError, match="dataset size must be an int >= 0, got -3"):
        dist.DistributedSampler(-3, num_replicas=1, rank=0)


# ------------------------------------------------------------------ NVTX


BUCKETS_WORKLOAD = textwrap.dedent("""
    import numpy as np
    import cugn
    from cugn import distributed as dist
    from cugn.layers import Dense, Sequential

    dist.init_process_group()
    model = Sequential([Dense(4), Dense(2)])
    model(np.ones((1, 3), np.float32))
    parallel = dist.DataParallel(model, bucket_cap_mb=1e-6)
    parallel(np.ones((2, 3), np.float32)).sum().backward()
""")


def test_profilers_see_each_bucket_inside_the_backward(tmp_path):
    recorder = profiling_scripts.load("nvtx_recorder")
    try:
        library = recorder.build(str(tmp_path))
    except recorder.RecorderUnavailable as error:
        pytest.skip(f"cannot build the NVTX recorder: {error}")
    path = str(tmp_path / "ranges.tsv")
    env = {k: v for k, v in os.environ.items() if k != "CUGN_NVTX"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    recorder.run([sys.executable, "-c", BUCKETS_WORKLOAD], library, path, env=env, cwd=ROOT)
    recording = recorder.parse(path)
    [walk] = [r for r in recording.roots if r.name == "autograd.backward"]
    inside = [(r.name, r.category) for r in walk.children if r.category == "comm"]
    # Four weights, a bucket each, then the wait for all of them at the end.
    assert inside == [("allreduce.bucket", "comm")] * 4 + [("allreduce.wait", "comm")]
    names = [r.name for r in walk.children]
    # The second Dense's buckets start before the backward of the first Dense's matmul.
    first_dense = max(i for i, name in enumerate(names) if name == "matmul.backward")
    assert names.index("allreduce.bucket") < first_dense
    assert recording.unbalanced == []
