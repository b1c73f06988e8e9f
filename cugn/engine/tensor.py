"""``Tensor``: an array (NumPy or CuPy) plus what autograd needs to know about it."""

import numbers
import weakref

import numpy as np

from .. import backend
from .grad_mode import is_grad_enabled


class Tensor:
    """A NumPy or CuPy array that records the operations applied to it.

    ``data`` is the array itself; ``grad`` is None or a Tensor that backward
    accumulates into; ``grad_fn`` is the Node that produced a non-leaf Tensor.
    """

    __slots__ = ("data", "grad", "grad_fn", "_output_index", "_requires_grad", "_hooks",
                 "_post_accumulate_hooks", "__weakref__")
    # NumPy and CuPy arrays hand binary operators over to Tensor's reflected methods.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        elif not backend.is_array(data):
            data = np.asarray(data)
        self.data = data
        self.grad = None
        self.grad_fn = None
        self._output_index = 0
        self._hooks = None
        self._post_accumulate_hooks = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _from_node(cls, data, node, index):
        """An op's output (``data`` is already an array), made without __init__'s checks;
        with ``node`` None, a leaf that requires no grad (an op that was not recorded)."""
        tensor = cls.__new__(cls)
        tensor.data = data
        tensor.grad = None
        tensor.grad_fn = node
        tensor._output_index = index
        tensor._hooks = None
        tensor._post_accumulate_hooks = None
        tensor._requires_grad = node is not None
        return tensor

    # ---------------------------------------------------------------- properties
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad can only be changed on leaf tensors; use .detach() first"
            )
        if flag and not backend.is_floating(self.dtype):
            raise TypeError(
                f"only floating point tensors can require gradients, got dtype {self.dtype}"
            )
        self._requires_grad = bool(flag)

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def shape(self):
        return self.data.shape  # a tuple on NumPy and CuPy alike

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        return backend.device_of(self.data)

    def numel(self):
        return int(self.data.size)

    def size(self, dim=None):
        """The shape as a tuple, or the length of axis ``dim`` (PyTorch's ``size``)."""
        if dim is None:
            return self.shape
        return self.data.shape[_dim_index(dim, self.ndim, "size")]

    def dim(self):
        """The number of dimensions (PyTorch's name for ``ndim``)."""
        return self.data.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    # ------------------------------------------------------------- conversion
    def numpy(self):
        """The data as a NumPy array (a copy from the GPU, the array itself on the CPU)."""
        return self.data.get() if backend.is_cupy_array(self.data) else self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def detach(self):
        """A new leaf Tensor sharing this one's data, cut off from the graph."""
        return Tensor(self.data)

    def clone(self):
        """A copy of the data; differentiable (its gradient flows back to this Tensor)."""
        return _ops.clone(self)

    # ------------------------------------------------------------- in place
    def zero_(self):
        """Set every value to 0 in place and return self, e.g. ``x.grad.zero_()``."""
        return self.fill_(0)

    def fill_(self, value):
        """Set every value to ``value`` in place and return self.

        As in PyTorch, a leaf that requires grad may only be changed under
        ``no_grad``. cugn records no in-place operations, so a Tensor computed by
        recorded operations may not be changed at all.
        """
        if self.grad_fn is not None:
            raise RuntimeError(
                f"fill_()/zero_() on a tensor computed by recorded operations "
                f"(grad_fn=<{self.grad_fn.name}>): cugn records no in-place operations; "
                "make a new tensor instead, e.g. cugn.zeros_like(t)")
        if self._requires_grad and is_grad_enabled():
            raise RuntimeError(
                "a leaf tensor that requires grad cannot be changed in place (fill_()/zero_()) "
                "while gradients are recorded; do it under cugn.no_grad()")
        if isinstance(value, Tensor):
            value = value.item()
        self.data.fill(value)
        return self

    def to(self, device=None, dtype=None):
        """Move to ``device`` and/or cast to ``dtype``; differentiable, like PyTorch's."""
        result = self
        if device is not None and backend.parse_device(device) != self.device:
            result = _ops.to_device(result, device)
        if dtype is not None and np.dtype(dtype) != self.dtype:
            result = _ops.cast(result, dtype)
        return result

    def astype(self, dtype):
        return self.to(dtype=dtype)

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def half(self):
        return self.to(dtype=np.float16)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=None):
        return self.to("cuda" if index is None else f"cuda:{index}")

    # ------------------------------------------------------------- interop
    def __dlpack__(self, *args, **kwargs):
        """The data as a DLPack capsule (zero copy), for ``torch.from_dlpack``,
        ``jax.dlpack.from_dlpack``, ``numpy.from_dlpack`` or ``cupy.from_dlpack``."""
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        """NumPy's view of a CPU tensor (no copy unless ``dtype`` or ``copy`` asks for one).
        A GPU tensor is not converted implicitly, as in CuPy and PyTorch: call ``.numpy()``."""
        if backend.is_cupy_array(self.data):
            raise TypeError(f"a tensor on {self.device} cannot be converted to a NumPy array "
                            "implicitly; call .numpy() to copy it to the host")
        if copy is False and dtype is not None and np.dtype(dtype) != self.dtype:
            raise ValueError(f"cannot convert a {self.dtype} tensor to {np.dtype(dtype)} "
                             "without a copy (copy=False)")
        array = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return array.copy() if copy else array

    @property
    def __cuda_array_interface__(self):
        """CUDA's array interface of a GPU tensor (zero copy, for Numba, CuPy, PyTorch).
        A CPU tensor has none: the AttributeError makes ``hasattr`` False."""
        if not backend.is_cupy_array(self.data):
            raise AttributeError("__cuda_array_interface__ exists only for tensors on a CUDA "
                                 "device; this one is on the cpu")
        return self.data.__cuda_array_interface__

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        extras = []
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (np.float32, np.int64, np.bool_):
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    # ------------------------------------------------------------- autograd
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into the ``grad`` of every leaf that requires grad."""
        from .autograd import backward

        backward([self], None if gradient is None else [gradient], retain_graph, create_graph)

    def retain_grad(self):
        """Keep this non-leaf Tensor's gradient in ``.grad`` after backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        if self.grad_fn is None:
            return
        index = self._output_index
        hooks = (self.grad_fn.output_hooks or {}).get(index, [])
        if any(isinstance(hook, _RetainGrad) for hook in hooks):
            return
        self.grad_fn.add_output_hook(index, _RetainGrad(self))

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this Tensor's gradient is computed; a non-None
        return value replaces the gradient. Returns a handle with ``remove()``."""
        if not self.requires_grad:
            raise RuntimeError("register_hook() on a tensor that does not require grad")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            self._hooks.append(hook)
            return _HookHandle(self._hooks, hook)
        self.grad_fn.add_output_hook(self._output_index, hook)
        return _HookHandle(self.grad_fn.output_hooks[self._output_index], hook)

    def register_post_accumulate_grad_hook(self, hook):
        """On a leaf: call ``hook(tensor)`` in ``backward()`` once this Tensor's ``.grad``
        holds its complete gradient, while the backward of the rest of the graph may
        still be running (``grad()`` does not call it). Returns a handle with ``remove()``."""
        if not self.requires_grad or self.grad_fn is not None:
            raise RuntimeError("register_post_accumulate_grad_hook() needs a leaf tensor "
                               "that requires grad")
        if self._post_accumulate_hooks is None:
            self._post_accumulate_hooks = []
        self._post_accumulate_hooks.append(hook)
        return _HookHandle(self._post_accumulate_hooks, hook)

    # ------------------------------------------------------------- operators
    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.sub(self, other)

    def __rsub__(self, other):
        return _ops.sub(other, self)

    def __mul__(self, other):
        return _ops.mul(self, other)

    def __rmul__(self, other):
        return _ops.mul(other, self)

    def __truediv__(self, other):
        return _ops.div(self, other)

    def __rtruediv__(self, other):
        return _ops.div(other, self)

    def __pow__(self, other):
        return _ops.pow(self, other)

    def __rpow__(self, other):
        return _ops.pow(other, self)

    def __neg__(self):
        return _ops.neg(self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    # Comparisons give boolean tensors that carry no gradient.
    def __lt__(self, other):
        return _compare(np.less, self, other)

    def __le__(self, other):
        return _compare(np.less_equal, self, other)

    def __gt__(self, other):
        return _compare(np.greater, self, other)

    def __ge__(self, other):
        return _compare(np.greater_equal, self, other)

    def __eq__(self, other):
        return _compare(np.equal, self, other)

    def __ne__(self, other):
        return _compare(np.not_equal, self, other)

    __hash__ = object.__hash__

    # ------------------------------------------------------------- methods
    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def sqrt(self):
        return _ops.sqrt(self)

    def abs(self):
        return _ops.abs(self)

    def tanh(self):
        return _ops.tanh(self)

    def sigmoid(self):
        return _ops.sigmoid(self)

    def relu(self):
        return _ops.relu(self)

    def silu(self):
        return _ops.silu(self)

    def erf(self):
        return _ops.erf(self)

    # Reductions and shape ops take NumPy's axis=/keepdims= or PyTorch's dim=/keepdim=.
    def softmax(self, axis=None, *, dim=None):
        return _ops.softmax(self, axis, dim=dim)

    def log_softmax(self, axis=None, *, dim=None):
        return _ops.log_softmax(self, axis, dim=dim)

    def sum(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        return _ops.sum(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def mean(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        return _ops.mean(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def var(self, axis=None, keepdims=None, ddof=None, *, dim=None, keepdim=None,
            correction=None):
        return _ops.var(self, axis, keepdims, ddof, dim=dim, keepdim=keepdim,
                        correction=correction)

    def max(self, axis=None, keepdims=None, *, dim=None, keepdim=None):
        return _ops.max(self, axis, keepdims, dim=dim, keepdim=keepdim)

    def reshape(self, *shape):
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def permute(self, *axes, dims=None):
        if dims is not None and axes:
            raise TypeError(f"permute got both axes {axes} and dims={dims!r}; give one")
        return _ops.permute(self, dims if dims is not None else
                            axes[0] if len(axes) == 1 else axes)

    def transpose(self, axis0=None, axis1=None, *, dim0=None, dim1=None):
        return _ops.transpose(self, axis0, axis1, dim0=dim0, dim1=dim1)

    @property
    def T(self):
        return _ops.permute(self, tuple(reversed(range(self.ndim))))


def as_tensor(value):
    """``value`` itself if it is a Tensor, a leaf Tensor sharing an array's memory,
    or, for Python scalars and lists, a new one by ``tensor``'s rules."""
    if isinstance(value, Tensor):
        return value
    return Tensor(value) if backend.is_array(value) else tensor(value)


def _dim_index(dim, ndim, name):
    """``dim`` as a non-negative axis; IndexError when out of range, as in PyTorch."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{name}(): dim must be an int, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise IndexError(f"{name}(): dim {dim} is out of range for a tensor of {ndim} "
                         f"dimensions")
    return int(dim) % ndim


def _compare(ufunc, a, b):
    a = a.data if isinstance(a, Tensor) else a
    b = b.data if isinstance(b, Tensor) else b
    xp = backend.array_module(a) if backend.is_array(a) else backend.array_module(b)
    return Tensor(getattr(xp, ufunc.__name__)(a, b))


class _RetainGrad:
    """The hook behind ``retain_grad``: stores the gradient on the Tensor, accumulating."""

    def __init__(self, tensor):
        self.tensor = weakref.ref(tensor)

    def __call__(self, grad):
        tensor = self.tensor()
        if tensor is not None:
            retained = grad if is_grad_enabled() else grad.detach()
            tensor.grad = retained if tensor.grad is None else tensor.grad + retained


class _HookHandle:
    def __init__(self, hooks, hook):
        self.hooks = hooks
        self.hook = hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)



def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf Tensor holding a copy of ``data`` (like ``torch.tensor``).

    ``data`` may be a Python scalar or nested list (floats become float32, as in
    PyTorch), a NumPy array (ml_dtypes' bfloat16 included), a CuPy array or a
    Tensor. ``device`` is "cpu", "cuda" or "cuda:N"; by default the data stays
    where it is.
    """
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_array(data):
        array = data.astype(dtype if dtype is not None else data.dtype, copy=True)
    else:
        array = np.array(data, dtype=dtype)
        # Python floats become float32; a NumPy scalar keeps its dtype, as an array does.
        if dtype is None and array.dtype == np.float64 and not isinstance(data, np.generic):
            array = array.astype(np.float32)
    if device is not None:
        array = backend.to_device(array, device)
    return Tensor(array, requires_grad=requires_grad)


# The operations are defined in terms of Tensor, so they are imported after it.
from .. import functions as _ops  # noqa: E402
