"""Check backward against central finite differences, in float64.

For a random vector ``v`` per output, the analytical vector-Jacobian product
``v^T J`` from one backward pass is compared, element by element, with the
derivative of ``<v, f(x)>`` by central differences (two forward passes per
input element). A wrong backward escapes only for a measure-zero set of ``v``.
"""

import numpy as np

from .. import backend
from .autograd import grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Analytical and numerical gradients disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """True if ``fn``'s backward matches finite differences for every input that
    requires grad; otherwise raise ``GradcheckError`` (or return False).

    ``fn`` takes the inputs positionally and returns a Tensor or a tuple of
    Tensors. Floating Tensor inputs are copied to float64 first.
    """
    inputs = _as_float64(inputs)
    differentiable = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not differentiable:
        raise ValueError("gradcheck needs at least one input Tensor with requires_grad=True")

    outputs = _floating_outputs(fn(*inputs))
    rng = np.random.default_rng(seed)
    projections = [rng.standard_normal(out.shape) for out in outputs]
    projections = [backend.to_device(v, out.device) for v, out in zip(projections, outputs)]

    analytical = _analytical(outputs, projections, [inputs[i] for i in differentiable])
    for position, index in enumerate(differentiable):
        numerical = _numerical(fn, inputs, index, projections, eps)
        got = backend.to_device(analytical[position], "cpu")
        # Written so that NaN on either side counts as a disagreement.
        bad = ~(np.abs(got - numerical) <= atol + rtol * np.abs(numerical))
        if bad.any():
            if not raise_exception:
                return False
            where = np.unravel_index(int(np.argmax(np.abs(got - numerical) * bad)), got.shape)
            raise GradcheckError(
                f"gradient of input {index} disagrees with finite differences at "
                f"{len(np.argwhere(bad))} of {got.size} elements; at index {tuple(map(int, where))}: "
                f"analytical {got[where]!r}, numerical {numerical[where]!r}\n"
                f"analytical:\n{got}\nnumerical:\n{numerical}"
            )
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0):
    """Check second derivatives: gradcheck the map (inputs, v) -> v^T J(inputs),
    with ``v`` the ``grad_outputs`` (random when not given)."""
    inputs = _as_float64(inputs)
    differentiable = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if grad_outputs is None:
        rng = np.random.default_rng(seed + 1)
        outputs = _floating_outputs(fn(*inputs))
        grad_outputs = [
            Tensor(backend.to_device(rng.standard_normal(out.shape), out.device),
                   requires_grad=True)
            for out in outputs
        ]
    grad_outputs = _as_float64(grad_outputs)
    count = len(inputs)

    def first_derivative(*args):
        outputs = _floating_outputs(fn(*args[:count]))
        chosen = [x for x in args[:count] if isinstance(x, Tensor) and x.requires_grad]
        grads = grad(outputs, chosen, list(args[count:]), create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    if not differentiable:
        raise ValueError("gradgradcheck needs at least one input Tensor with requires_grad=True")
    return gradcheck(first_derivative, list(inputs) + list(grad_outputs), eps, atol, rtol,
                     raise_exception, seed)


def _as_float64(values):
    values = [values] if isinstance(values, Tensor) else list(values)
    converted = []
    for value in values:
        if isinstance(value, Tensor) and backend.is_floating(value.dtype):
            value = Tensor(value.data.astype(np.float64), requires_grad=value.requires_grad)
        converted.append(value)
    return converted


def _floating_outputs(result):
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    return [out for out in outputs if isinstance(out, Tensor) and backend.is_floating(out.dtype)]


def _projected(outputs, projections):
    total = None
    for out, v in zip(outputs, projections):
        term = (out * Tensor(v)).sum()
        total = term if total is None else total + term
    return total


def _analytical(outputs, projections, inputs):
    with_graph = [(out, v) for out, v in zip(outputs, projections) if out.requires_grad]
    if not with_graph:
        return [backend.zeros(x.shape, np.float64, x.device) for x in inputs]
    total = _projected(*zip(*with_graph))
    grads = grad(total, inputs, allow_unused=True)
    return [
        g.data if g is not None else backend.zeros(x.shape, np.float64, x.device)
        for g, x in zip(grads, inputs)
    ]


def _numerical(fn, inputs, index, projections, eps):
    original = inputs[index]
    data = original.data.copy()
    flat = data.reshape(-1)
    result = np.zeros(flat.size)
    probe = list(inputs)
    # Recording stays on: fn may itself take gradients (as in gradgradcheck).
    for i in range(flat.size):
        saved = flat[i].item()
        values = []
        for step in (eps, -eps):
            flat[i] = saved + step
            probe[index] = Tensor(data, requires_grad=True)
            values.append(float(_projected(_floating_outputs(fn(*probe)), projections).item()))
        flat[i] = saved
        result[i] = (values[0] - values[1]) / (2 * eps)
    return result.reshape(original.shape)
