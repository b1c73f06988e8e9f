"""``Function``: an operation with its forward and backward side by side.

``forward`` works on raw arrays (NumPy or CuPy) and never records anything.
``backward`` receives the output gradients as Tensors and returns one gradient
per positional argument, written with Tensor operations: under
``create_graph=True`` those operations record, which is how every op gets a
differentiable gradient without a second hand-written derivative.

A call to ``apply`` that needs gradients leaves a ``Node`` on the outputs. A
node keeps only what backward needs: the saved values and, per input, an edge
to where the input's gradient goes (the input's own node, or the leaf Tensor
that accumulates it).
"""

import sys
import weakref

import numpy as np

from .. import backend
from ..profiling import nvtx
from .grad_mode import _state, is_grad_enabled
from .tensor import Tensor

_FREED = (
    "Trying to backward through the graph a second time (or to read saved values "
    "after they were freed). Pass retain_graph=True to the first backward call."
)


class Context:
    """What forward leaves for backward: ``ctx.save_for_backward(...)``, ``ctx.saved_tensors``,
    ``ctx.needs_input_grad``, and any attribute forward sets on it."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self._to_save = ()
        self._saved = None
        self._node = None

    def save_for_backward(self, *values):
        """Keep arrays (inputs, outputs or intermediates) or plain values for backward."""
        self._to_save = values

    @property
    def saved_tensors(self):
        """The saved values, inputs and outputs as the Tensors the graph knows them by."""
        if self._saved is None:
            raise RuntimeError(_FREED)
        resolved = []
        for kind, value in self._saved:
            if kind == "input":
                tensor, raw = value
                if tensor.data is not raw:
                    raise RuntimeError(
                        "a Tensor saved for backward has had its .data replaced since the "
                        "forward (an optimizer step, set_weights, ...); backward would use "
                        "the new values: run backward before changing it, or recompute")
                resolved.append(tensor)
            elif kind == "output":
                index, array = value
                resolved.append(Tensor._from_node(array, self._node(), index))
            elif backend.is_array(value):
                resolved.append(Tensor(value))
            else:
                resolved.append(value)
        return tuple(resolved)

    def _resolve_saved(self, args, raw_args, outputs):
        """Tell saved inputs and outputs apart from other arrays, by identity."""
        saved = []
        for value in self._to_save:
            saved.append(_saved_entry(value, args, raw_args, outputs))
        self._saved = saved
        self._to_save = ()


def _saved_entry(value, args, raw_args, outputs):
    """(kind, what) for one value saved for backward: an input, an output, or a value."""
    for arg, raw in zip(args, raw_args):
        if value is raw and (type(raw) is np.ndarray or backend.is_array(raw)):
            return "input", (arg, raw)
    for index, output in enumerate(outputs):
        if value is output:
            return "output", (index, output)
    return "value", value


class Node:
    """A recorded application of a Function: the tape entry that backward walks."""

    __slots__ = ("function", "ctx", "edges", "output_meta", "device", "output_hooks",
                 "__weakref__")

    def __init__(self, function, ctx, args, outputs):
        self.function = function
        self.ctx = ctx
        # List comprehensions: they cost less than generators per op.
        self.edges = tuple([Edge(arg) if needs else None
                            for arg, needs in zip(args, ctx.needs_input_grad)])
        # Enough to make a zero gradient for an output that receives none.
        self.output_meta = tuple([(out.shape, out.dtype) for out in outputs])
        self.device = backend.device_of(outputs[0])
        self.output_hooks = None  # {output index: [hook, ...]}, for non-leaf hooks

    @property
    def name(self):
        return self.function.__name__

    def apply_backward(self, grad_outputs):
        if self.ctx is None or self.ctx._saved is None:
            raise RuntimeError(_FREED)
        grads = self.function.backward(self.ctx, *grad_outputs)
        if not isinstance(grads, tuple):
            grads = (grads,)
        if len(grads) != len(self.edges):
            raise RuntimeError(
                f"{self.name}.backward returned {len(grads)} gradients, "
                f"expected {len(self.edges)} (one per argument of forward)"
            )
        return grads

    def release(self):
        """Free what backward saved; the node cannot run again."""
        if self.ctx is not None:
            self.ctx._saved = None
        self.ctx = None

    def add_output_hook(self, index, hook):
        if self.output_hooks is None:
            self.output_hooks = {}
        self.output_hooks.setdefault(index, []).append(hook)


class Edge:
    """Where one input's gradient goes, with the input's shape and dtype to check it against."""

    __slots__ = ("node", "index", "leaf", "shape", "dtype")

    def __init__(self, tensor):
        self.node = tensor.grad_fn
        self.index = tensor._output_index
        self.leaf = tensor if tensor.grad_fn is None else None
        self.shape = tensor.data.shape
        self.dtype = tensor.data.dtype


class Function:
    """Subclass with static ``forward(ctx, *args)`` and ``backward(ctx, *grad_outputs)``;
    call it with ``MyFunction.apply(*args)``.

    Positional arguments that are Tensors are the inputs of the graph; anything
    else (ints, tuples, scalars) reaches forward unchanged, and backward returns
    None in its place.

    ``op_name`` names the op in NVTX ranges (``relu.forward``); by default it is
    the class name in snake_case (``GroupNorm`` -> ``group_norm``).
    """

    op_name = None

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        # With NVTX ranges off this is the whole cost of profiling: one flag read.
        profiled = nvtx.flag.on
        if profiled:
            nvtx.push_op(cls)
        try:
            raw_args, needs = [], []
            for arg in args:
                if isinstance(arg, Tensor):
                    raw_args.append(arg.data)
                    needs.append(arg._requires_grad)
                else:
                    raw_args.append(arg)
                    needs.append(False)
            raw_args, needs_input_grad = tuple(raw_args), tuple(needs)
            if "cupy" in sys.modules:  # with NumPy alone everything is on the CPU
                _check_same_device(cls, raw_args)
            enabled = is_grad_enabled()
            record = enabled and True in needs_input_grad

            ctx = Context(needs_input_grad)
            _state.enabled = False  # forward never records
            try:
                result = cls.forward(ctx, *raw_args)
            finally:
                _state.enabled = enabled
            if type(result) is np.ndarray:  # the common case, first
                outputs = (result,)
            else:
                outputs = tuple(out if backend.is_array(out) else np.asarray(out)
                                for out in (result if isinstance(result, tuple) else (result,)))

            if not record:
                tensors = [Tensor._from_node(out, None, 0) for out in outputs]
            else:
                node = Node(cls, ctx, args, outputs)
                ctx._node = weakref.ref(node)  # a strong reference would make a cycle
                ctx._resolve_saved(args, raw_args, outputs)
                # Only floating outputs carry gradients (an integer or bool output has none).
                tensors = [Tensor._from_node(out, node, i) if backend.is_floating(out.dtype)
                           else Tensor._from_node(out, None, 0) for i, out in enumerate(outputs)]
            return tuple(tensors) if isinstance(result, tuple) else tensors[0]
        finally:
            if profiled:
                nvtx.pop()


def _check_same_device(function, raw_args):
    devices = {backend.device_of(raw) for raw in raw_args if backend.is_array(raw)}
    if len(devices) > 1:
        raise RuntimeError(
            f"{function.__name__}: expected all tensors on one device, got {sorted(devices)}"
        )
