"""gradcheck and gradgradcheck must catch wrong derivatives, not only pass right ones."""

import numpy as np
import pytest

import cugn


class SquareWithWrongGradient(cugn.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 2.1 * x  # should be 2 * x


class SquareWithConstantGradient(cugn.Function):
    """Right first derivative, but written so that it is not differentiable again:
    the second derivative it implies is 0 instead of 2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * cugn.Tensor(2 * x.data)


def inputs():
    return [cugn.tensor(np.linspace(0.5, 2.0, 4), dtype=np.float64, requires_grad=True)]


def test_gradcheck_rejects_a_wrong_first_derivative():
    with pytest.raises(cugn.GradcheckError, match="input 0"):
        cugn.gradcheck(SquareWithWrongGradient.apply, inputs())
    assert cugn.gradcheck(SquareWithWrongGradient.apply, inputs(), raise_exception=False) is False


def test_gradgradcheck_rejects_a_wrong_second_derivative():
    assert cugn.gradcheck(SquareWithConstantGradient.apply, inputs())
    with pytest.raises(cugn.GradcheckError):
        cugn.gradgradcheck(SquareWithConstantGradient.apply, inputs())


def test_gradcheck_runs_in_float64_whatever_the_input_dtype():
    x = cugn.tensor([0.3, 0.7], dtype=np.float32, requires_grad=True)
    assert cugn.gradcheck(lambda t: t.tanh() * t, [x])


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        cugn.gradcheck(lambda t: t * 2, [cugn.tensor([1.0])])


def test_nan_gradients_are_reported():
    class NaNBackward(cugn.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * np.nan

    x = cugn.tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    with pytest.raises(cugn.GradcheckError):
        cugn.gradcheck(NaNBackward.apply, [x])
