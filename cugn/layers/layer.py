"""``Layer``: the Keras-style base class (weights, build on first call, config)."""

import os
import re

import numpy as np

from .. import backend, initializers
from ..engine.parameter import Parameter
from ..engine.tensor import Tensor, as_tensor
from ..profiling import nvtx

_name_counts = {}


def _unique_name(cls):
    """``group_normalization``, then ``group_normalization_1``, ... as Keras names layers."""
    # Keras's snake case: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d.
    base = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls.__name__)
    base = re.sub(r"([a-z])([A-Z])", r"\1_\2", base).lower()
    count = _name_counts.get(base, 0)
    _name_counts[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


_MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
_WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _policy_name(dtype):
    """The dtype policy name from None, a dtype, a name or Keras's policy dict: a
    floating dtype, or a mixed policy (float32 weights; the computation follows the
    input's dtype)."""
    if dtype is None:
        return "float32"
    name = dtype.get("config", {}).get("name", "float32") if isinstance(dtype, dict) else dtype
    if name in _MIXED_POLICIES:
        return name
    try:
        name = np.dtype(name).name
    except TypeError:
        name = None
    if name not in _WEIGHT_DTYPES:
        raise ValueError(f"dtype must be a floating dtype {_WEIGHT_DTYPES} or a mixed policy "
                         f"{_MIXED_POLICIES}, got {dtype!r}")
    return name


def _named_dtype(name):
    """np.dtype of a policy's dtype name; bfloat16 comes from ml_dtypes."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise RuntimeError("a bfloat16 dtype policy needs ml_dtypes: pip install ml_dtypes") \
                from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _npz_path(path):
    """``path`` with the ".npz" suffix that ``numpy.savez`` would add."""
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def require_default(value, default, name, layer_class):
    """Accept a Keras argument that cugn does not implement only at its default value,
    so that Keras configs load; anything else is an error naming it."""
    normalized = tuple(value) if isinstance(value, list) else value
    if normalized != default:
        raise ValueError(f"{layer_class}: {name}={value!r} is not supported by cugn "
                         f"(only {default!r})")


class Layer:
    """Weights, the trainable flag, regularization losses, get/set weights and
    config. Subclasses implement ``build(input_shape)`` (creating weights with
    ``add_weight``) and ``call(inputs)``; ``__call__`` builds on first use, with
    the weights on the input's device, and casts floating inputs to the compute
    dtype first, as Keras's autocast does."""

    autocast = True  # containers (Sequential) leave the casting to their layers

    def __init__(self, name=None, dtype=None, trainable=True, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments: "
                            f"{sorted(kwargs)}")
        self.dtype_policy = _policy_name(dtype)  # checked before a name is taken
        self.name = name if name is not None else _unique_name(type(self))
        self._trainable = bool(trainable)
        self._weights = []
        self._weight_trainable = []  # each weight's own flag, under the layer's
        self._device = "cpu"
        self.built = False

    # ------------------------------------------------------------- dtype
    @property
    def dtype(self):
        """The dtype of the weights (float32 under a mixed policy, as in Keras)."""
        policy = self.dtype_policy
        return _named_dtype("float32" if policy.startswith("mixed_") else policy)

    @property
    def compute_dtype(self):
        """The dtype floating inputs are cast to: the policy's, or float16/bfloat16 under
        mixed_float16/mixed_bfloat16, as in Keras."""
        return _named_dtype(self.dtype_policy.removeprefix("mixed_"))

    # ------------------------------------------------------------- weights
    def add_weight(self, name, shape, initializer="zeros", regularizer=None, constraint=None,
                   trainable=True, dtype=None):
        # None means Keras's default for a floating weight.
        initializer = initializers.get("glorot_uniform" if initializer is None else initializer)
        data = np.asarray(initializer(tuple(shape), dtype or self.dtype))
        weight = Parameter(backend.to_device(data, self._device), name=name,
                           trainable=trainable and self._trainable, regularizer=regularizer,
                           constraint=constraint)
        self._weights.append(weight)
        self._weight_trainable.append(trainable)
        return weight

    @property
    def weights(self):
        return list(self._weights)

    @property
    def trainable_weights(self):
        return [w for w in self.weights if w.trainable]

    @property
    def non_trainable_weights(self):
        return [w for w in self.weights if not w.trainable]

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, flag):
        self._trainable = bool(flag)
        for weight, own_flag in zip(self._weights, self._weight_trainable):
            weight.trainable = self._trainable and own_flag

    @property
    def losses(self):
        """The regularization penalties of the weights, as scalar Tensors."""
        return [w.penalty() for w in self.weights if w.regularizer is not None]

    def get_weights(self):
        """Copies of the weights as NumPy arrays, in creation order."""
        return [np.array(w.numpy(), copy=True) for w in self.weights]

    def set_weights(self, weights):
        """Replace every weight; counts and shapes are all checked before any is changed."""
        weights = list(weights)
        own = self.weights
        if len(weights) != len(own):
            raise ValueError(
                f"{self.name}: set_weights expected {len(own)} arrays "
                f"({[w.name for w in own]}), got {len(weights)}"
            )
        arrays = []
        for weight, value in zip(own, weights):
            value = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
            if tuple(value.shape) != weight.shape:
                raise ValueError(f"{self.name}: weight {weight.name!r} has shape {weight.shape}, "
                                 f"got an array of shape {tuple(value.shape)}")
            arrays.append(value.astype(weight.dtype))
        for weight, value in zip(own, arrays):
            weight.data = backend.to_device(value, weight.device)

    def save_weights(self, path):
        """Write the weights to an ``.npz`` file (".npz" is appended to ``path`` if missing)."""
        if not self.built:
            raise ValueError(f"{self.name} has no weights yet: call it on an input first")
        weights = self.weights
        arrays = {f"{i:04d}_{w.name}": array for i, (w, array)
                  in enumerate(zip(weights, self.get_weights()))}
        np.savez(_npz_path(path), **arrays)

    def load_weights(self, path):
        """Read weights written by ``save_weights``. The file's names, count and shapes
        are all checked against this layer's weights before any weight changes."""
        if not self.built:
            raise ValueError(f"{self.name} has no weights yet: call it on an input first")
        expected = [f"{i:04d}_{w.name}" for i, w in enumerate(self.weights)]
        path = _npz_path(path)
        with np.load(path, allow_pickle=False) as stored:
            names = sorted(stored.files)
            if names != expected:
                raise ValueError(f"{self.name}: {path} holds weights {names}, "
                                 f"expected {expected}")
            arrays = [stored[name] for name in expected]
        self.set_weights(arrays)

    def to(self, device):
        """Move every weight to ``device``. An unbuilt layer builds on the device of its
        first input instead."""
        self._device = backend.parse_device(device)
        for weight in self._weights:
            weight.data = backend.to_device(weight.data, self._device)
        return self

    # ------------------------------------------------------------- calling
    def build(self, input_shape):
        self.built = True

    def call(self, inputs):
        raise NotImplementedError(f"{type(self).__name__} must implement call()")

    def __call__(self, inputs, *args, **kwargs):
        # The NVTX range ``GroupNormalization(group_norm).forward`` covers the build too.
        profiled = nvtx.flag.on
        if profiled:
            nvtx.push_layer(self)
        try:
            inputs = as_tensor(inputs)
            if self.autocast and backend.is_floating(inputs.dtype) and (
                    inputs.dtype != self.compute_dtype):
                inputs = inputs.to(dtype=self.compute_dtype)
            if not self.built:
                self._device = inputs.device
                self.build(inputs.shape)
                self.built = True
            return self.call(inputs, *args, **kwargs)
        finally:
            if profiled:
                nvtx.pop()

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    # ------------------------------------------------------------- config
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": {"module": "keras", "class_name": "DTypePolicy",
                      "config": {"name": self.dtype_policy}, "registered_name": None},
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"
