"""``DataParallel``: every rank trains the same model on its share of each batch.

At construction rank 0's weights are broadcast, so every rank starts equal.
Each forward through the wrapper notes which weights the output depends on.
During ``backward()``, the engine calls a post-accumulate hook on each weight as
soon as its gradient is complete; the hook copies it into its bucket, and a
full bucket starts its sum across ranks at once (a nonblocking MPI request, or
NCCL on its stream), while the backward goes on through the earlier layers.
When the last expected gradient is in, the hook waits for the sums and
replaces every ``.grad`` with the mean over the ranks, so ``backward()``
returns with reduced gradients and an optimizer step gives the same weights
on every rank.

As in PyTorch's DistributedDataParallel: one backward per forward through the
wrapper; every rank must use the same weights in its forward (a weight that no
rank uses is left alone); gradients are reduced to first order (a gradient made
with ``create_graph=True`` becomes a constant).
"""

import time

import numpy as np

from .. import backend
from ..engine.tensor import Tensor
from ..layers.layer import Layer
from ..profiling import nvtx
from .buckets import plan_buckets
from .collectives import broadcast
from .process_group import group

_MB = 1 << 20


class DataParallel:
    """Wraps a built ``Layer`` (a ``Sequential``...): calling it calls the model,
    ``.module`` is the model, and its weights (and any other attribute) are the
    model's. ``bucket_cap_mb`` bounds the bytes of gradients reduced together
    (PyTorch's default, 25)."""

    def __init__(self, module, bucket_cap_mb=25.0):
        if not isinstance(module, Layer):
            raise TypeError(f"module must be a cugn Layer, got {type(module).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a number above 0, got {bucket_cap_mb!r}")
        if not module.built or not module.trainable_weights:
            raise ValueError(f"{module.name} has no trainable weights yet: call it on an input "
                             "(which builds them) before wrapping it in DataParallel")
        for weight in module.trainable_weights:
            if any(isinstance(getattr(hook, "__self__", None), GradientReducer)
                   for hook in weight._post_accumulate_hooks or ()):
                raise ValueError(f"{module.name}'s weight {weight.name!r} is already reduced "
                                 "by a DataParallel: wrap a model once")
        world = group()
        _check_same_weights(world, module)
        for weight in module.weights:
            broadcast(weight, src=0)
        self.module = module
        self.reducer = GradientReducer(world, module.trainable_weights,
                                       max(1, int(bucket_cap_mb * _MB)))

    def __call__(self, *args, **kwargs):
        output = self.module(*args, **kwargs)
        self.reducer.expect(_leaves_reached(output))
        return output

    def __getattr__(self, name):
        # Only reached for what DataParallel itself lacks: weights, losses, summary...
        if name in ("module", "reducer"):
            raise AttributeError(name)
        return getattr(self.module, name)

    @property
    def communication_seconds(self):
        """Host time spent starting and waiting for the gradients' reductions, in total."""
        return self.reducer.communication_seconds


def _check_same_weights(world, module):
    """A clear error when the ranks' models differ, before a collective would mismatch."""
    mine = [(w.name, w.shape, np.dtype(w.dtype).name) for w in module.weights]
    for rank, theirs in enumerate(world.allgather_object(mine)):
        if theirs != mine:
            raise ValueError(f"rank {rank}'s model has weights {theirs}, rank {world.rank}'s "
                             f"{mine}: every rank must wrap the same model")


def _leaves_reached(output):
    """The ids of the leaf Tensors that ``output`` (a Tensor, or a tuple or list of them)
    was computed from."""
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    stack = [t.grad_fn for t in outputs if isinstance(t, Tensor) and t.grad_fn is not None]
    seen = set(stack)
    leaves = set()
    while stack:
        for edge in stack.pop().edges:
            if edge is None:
                continue
            if edge.leaf is not None:
                leaves.add(id(edge.leaf))
            elif edge.node not in seen:
                seen.add(edge.node)
                stack.append(edge.node)
    return leaves


class GradientReducer:
    """The buckets of a model's trainable weights and the reduction of one backward."""

    def __init__(self, world, params, cap_bytes):
        self.world = world
        self.params = list(params)
        self.buckets = plan_buckets(
            [(p.numel(), p.dtype, p.device) for p in self.params], cap_bytes)
        self.where = {}  # id(param) -> (bucket number, position in the bucket)
        for number, bucket in enumerate(self.buckets):
            for position, index in enumerate(bucket.indices):
                self.where[id(self.params[index])] = (number, position)
        self.flat = [None] * len(self.buckets)  # each bucket's array, made on first use
        self.communication_seconds = 0.0
        self.expected = None
        for param in self.params:
            param.register_post_accumulate_grad_hook(self.grad_ready)

    def expect(self, reached):
        """Arm the reduction for the next backward, of the weights among ``reached``. A
        forward that reached none (under no_grad, as an evaluation between a forward and
        its backward) changes nothing."""
        expected = {id(p) for p in self.params if id(p) in reached}
        if not expected:
            return
        if self.expected is not None and self.launched:
            missing = [p.name for p in self.params
                       if id(p) in self.expected and id(p) not in self.reported]
            raise RuntimeError(f"the last backward gave no gradient to weights {missing} that "
                               "the forward used; every rank must backward through all of "
                               "the output of each forward")
        self.expected = expected
        self.reported = set()
        self.left = [sum(id(self.params[i]) in expected for i in bucket.indices)
                     for bucket in self.buckets]
        self.launched = 0
        self.pending = []

    def grad_ready(self, param):
        """The post-accumulate hook: ``param.grad`` is complete for this backward."""
        if self.expected is None or id(param) not in self.expected \
                or id(param) in self.reported:
            return
        self.reported.add(id(param))
        for request in self.pending:  # the sums already started go on meanwhile
            request.poll()
        number, position = self.where[id(param)]
        bucket = self.buckets[number]
        offset = bucket.offsets[position]
        self._flat(number)[offset:offset + param.numel()] = param.grad.data.reshape(-1)
        self.left[number] -= 1
        # Every rank must start the same collectives in the same order: a bucket is
        # launched only after the ones before it in the plan.
        while self.launched < len(self.buckets) and self.left[self.launched] == 0:
            self._launch(self.launched)
            self.launched += 1
        if len(self.reported) == len(self.expected):
            self._finish()

    def _flat(self, number):
        if self.flat[number] is None:
            bucket = self.buckets[number]
            self.flat[number] = backend.zeros(bucket.numel, bucket.dtype, bucket.device)
        return self.flat[number]

    def _expected_in(self, bucket):
        return [i for i in bucket.indices if id(self.params[i]) in self.expected]

    def _launch(self, number):
        bucket = self.buckets[number]
        expected = self._expected_in(bucket)
        if not expected:
            return
        flat = self._flat(number)
        for position, index in enumerate(bucket.indices):
            if index not in expected:  # a weight no rank used adds zeros
                offset = bucket.offsets[position]
                flat[offset:offset + self.params[index].numel()] = 0
        start = time.perf_counter()
        with nvtx.range("allreduce.bucket", category="comm"):
            self.pending.append(self.world.transport_for(flat).all_reduce_start(flat))
        self.communication_seconds += time.perf_counter() - start

    def _finish(self):
        start = time.perf_counter()
        with nvtx.range("allreduce.wait", category="comm"):
            for request in self.pending:
                request.wait()
        self.communication_seconds += time.perf_counter() - start
        size = self.world.size
        for number, bucket in enumerate(self.buckets):
            flat = self.flat[number]
            for position, index in enumerate(bucket.indices):
                param = self.params[index]
                if id(param) in self.expected:
                    offset = bucket.offsets[position]
                    mean = flat[offset:offset + param.numel()].reshape(param.shape) / size
                    param.grad = Tensor(mean)
        self.expected = None
