"""The names a PyTorch user reaches for first, each against torch's own behaviour:
Tensor.size/dim/numel/clone/zero_/fill_/float/double/half, dim= and keepdim= in
reductions and shape ops, the factories and manual_seed."""

import numpy as np
import pytest
import torch

import cugn

TORCH_DTYPES = {np.float16: torch.float16, np.float32: torch.float32,
                np.float64: torch.float64, np.int64: torch.int64, np.bool_: torch.bool}


def pair(rng, shape=(2, 3, 4), requires_grad=False):
    data = rng.standard_normal(shape).astype(np.float32)
    return (cugn.tensor(data, requires_grad=requires_grad),
            torch.tensor(data, requires_grad=requires_grad))


def same(mine, theirs, atol=0.0):
    """Equal values (within atol), shape and dtype."""
    theirs = theirs.detach().numpy()
    assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
    np.testing.assert_allclose(mine.numpy(), theirs, rtol=0, atol=atol)


# ------------------------------------------------------------------ Tensor methods


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_size_dim_and_numel(shape):
    mine, theirs = cugn.zeros(shape), torch.zeros(shape)
    assert mine.size() == tuple(theirs.size())
    assert (mine.dim(), mine.numel()) == (theirs.dim(), theirs.numel())
    for d in range(-len(shape), len(shape)):
        assert mine.size(d) == theirs.size(d)
        assert mine.size(dim=d) == theirs.size(dim=d)
    for d in (len(shape), -len(shape) - 1):
        with pytest.raises(IndexError):
            theirs.size(d)
        with pytest.raises(IndexError, match="out of range"):
            mine.size(d)


def test_clone_copies_and_passes_the_gradient_back(rng):
    mine, theirs = pair(rng, requires_grad=True)
    weight = rng.standard_normal((2, 3, 4)).astype(np.float32)
    copy, theirs_copy = mine.clone(), theirs.clone()
    assert copy.data is not mine.data and not np.shares_memory(copy.data, mine.data)
    assert copy.requires_grad and not copy.is_leaf
    (copy * cugn.tensor(weight)).sum().backward()
    (theirs_copy * torch.tensor(weight)).sum().backward()
    same(mine.grad, theirs.grad)
    assert cugn.gradgradcheck(cugn.clone, [cugn.tensor(rng.standard_normal(3),
                                                       dtype=np.float64, requires_grad=True)])
    plain = cugn.tensor([1.0, 2.0]).clone()
    assert not plain.requires_grad and plain.is_leaf == torch.tensor([1.0]).clone().is_leaf


def test_zero_and_fill_in_place_outside_the_graph(rng):
    mine, theirs = pair(rng, requires_grad=True)
    (mine * mine).sum().backward()
    (theirs * theirs).sum().backward()
    grad = mine.grad
    assert grad.zero_() is grad and mine.grad is grad
    theirs.grad.zero_()
    same(mine.grad, theirs.grad)
    assert mine.grad.fill_(2.5) is grad
    same(mine.grad, theirs.grad.fill_(2.5))
    integers = cugn.tensor([1, 2, 3])
    same(integers.fill_(7), torch.tensor([1, 2, 3]).fill_(7))
    same(integers.fill_(cugn.tensor(4)), torch.tensor([1, 2, 3]).fill_(torch.tensor(4)))


def test_in_place_on_a_leaf_that_requires_grad_needs_no_grad(rng):
    mine, theirs = pair(rng, requires_grad=True)
    before = mine.numpy().copy()
    for name, args in (("zero_", ()), ("fill_", (1.0,))):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            getattr(theirs, name)(*args)
        with pytest.raises(RuntimeError, match="leaf tensor that requires grad .*no_grad"):
            getattr(mine, name)(*args)
    np.testing.assert_array_equal(mine.numpy(), before)  # the refused calls changed nothing
    with cugn.no_grad():
        mine.fill_(3.0)
    with torch.no_grad():
        theirs.fill_(3.0)
    same(mine, theirs)
    assert mine.requires_grad and mine.is_leaf


def test_in_place_on_a_recorded_result_is_refused(rng):
    # torch records the in-place op with a version counter; cugn records none, so it
    # refuses rather than silently change a value that backward may have saved.
    mine, _ = pair(rng, requires_grad=True)
    result = mine.exp()
    for call in (result.zero_, lambda: result.fill_(1.0)):
        with pytest.raises(RuntimeError, match="grad_fn=<Exp>.*zeros_like"):
            call()
        with cugn.no_grad(), pytest.raises(RuntimeError, match="records no in-place"):
            call()


@pytest.mark.parametrize("method, dtype", [("float", np.float32), ("double", np.float64),
                                           ("half", np.float16)])
def test_float_double_half(method, dtype, rng):
    data = rng.standard_normal(5)
    mine, theirs = cugn.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    converted, theirs_converted = getattr(mine, method)(), getattr(theirs, method)()
    same(converted, theirs_converted)
    converted.sum().backward()
    theirs_converted.sum().backward()
    same(mine.grad, theirs.grad)  # the gradient comes back in the input's dtype
    assert getattr(cugn.tensor([1, 2]), method)().dtype == dtype


# ------------------------------------------------------------------ dim= and keepdim=


@pytest.mark.parametrize("name, torch_name", [("sum", "sum"), ("mean", "mean"),
                                              ("max", "amax")])  # cugn's max is torch's amax
@pytest.mark.parametrize("dim", [0, -1, (0, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_reductions_take_dim_and_keepdim(name, torch_name, dim, keepdim, rng):
    mine, theirs = pair(rng, requires_grad=True)
    result = getattr(mine, name)(dim=dim, keepdim=keepdim)
    theirs_result = getattr(theirs, torch_name)(dim=dim, keepdim=keepdim)
    same(result, theirs_result, atol=1e-6)
    same(getattr(cugn, name)(mine, dim=dim, keepdim=keepdim),
         getattr(torch, torch_name)(theirs, dim=dim, keepdim=keepdim), atol=1e-6)
    result.sum().backward()
    theirs_result.sum().backward()
    same(mine.grad, theirs.grad, atol=1e-6)


@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("dim", [1, (0, 2)])
def test_var_takes_dim_keepdim_and_correction(correction, dim, rng):
    mine, theirs = pair(rng)
    same(mine.var(dim=dim, keepdim=True, correction=correction),
         theirs.var(dim=dim, keepdim=True, correction=correction), atol=1e-6)
    same(cugn.var(mine, dim=dim, correction=correction),
         torch.var(theirs, dim=dim, correction=correction), atol=1e-6)
    # Biased by default, as NumPy and Keras: torch's correction=0.
    same(mine.var(dim=dim), theirs.var(dim=dim, correction=0), atol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_takes_dim(name, dim, rng):
    mine, theirs = pair(rng)
    same(getattr(mine, name)(dim=dim), getattr(theirs, name)(dim=dim), atol=1e-6)
    same(getattr(cugn, name)(mine, dim=dim), getattr(torch, name)(theirs, dim=dim), atol=1e-6)


def test_shape_ops_take_torch_names(rng):
    mine, theirs = pair(rng)
    same(cugn.concatenate([mine, mine], dim=1), torch.cat([theirs, theirs], dim=1))
    same(cugn.stack([mine, mine], dim=-1), torch.stack([theirs, theirs], dim=-1))
    same(mine.transpose(dim0=0, dim1=2), theirs.transpose(dim0=0, dim1=2))
    same(cugn.transpose(mine, dim0=1, dim1=-1), torch.transpose(theirs, dim0=1, dim1=-1))
    same(mine.permute(dims=(2, 0, 1)), theirs.permute(dims=(2, 0, 1)))
    same(cugn.permute(mine, dims=(1, 0, 2)), torch.permute(theirs, dims=(1, 0, 2)))


@pytest.mark.parametrize("call", [
    lambda t: t.sum(axis=0, dim=0),
    lambda t: t.mean(keepdims=True, keepdim=True),
    lambda t: t.var(ddof=1, correction=1),
    lambda t: t.softmax(axis=1, dim=1),
    lambda t: cugn.concatenate([t, t], axis=0, dim=0),
    lambda t: t.transpose(0, 1, dim0=0),
    lambda t: t.permute(1, 0, 2, dims=(1, 0, 2)),
])
def test_numpy_and_torch_names_together_are_an_error(call, rng):
    mine, _ = pair(rng)
    with pytest.raises(TypeError, match="got both"):
        call(mine)


# ------------------------------------------------------------------ factories


@pytest.mark.parametrize("name", ["zeros", "ones", "empty"])
@pytest.mark.parametrize("size", [(), (3,), (2, 3), ((2, 3),), ([4, 1],), (0, 2)])
def test_zeros_ones_empty(name, size):
    # torch needs () for no size; cugn takes none as well.
    mine, theirs = getattr(cugn, name)(*size), getattr(torch, name)(*(size or [()]))
    assert mine.shape == tuple(theirs.shape) and mine.dtype == np.float32
    if name != "empty":
        same(mine, theirs)
    typed = getattr(cugn, name)(*size, dtype=np.float64, requires_grad=True)
    assert typed.dtype == np.float64 and typed.requires_grad and typed.is_leaf
    assert typed.device == "cpu"


@pytest.mark.parametrize("fill_value", [True, 3, -2.5])
def test_full_takes_its_dtype_from_the_value(fill_value):
    same(cugn.full((2, 3), fill_value), torch.full((2, 3), fill_value))
    same(cugn.full(4, fill_value, dtype=np.float64), torch.full((4,), fill_value,
                                                                dtype=torch.float64))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int64])
def test_zeros_like_and_ones_like_keep_shape_and_dtype(dtype):
    source = np.arange(6).reshape(2, 3).astype(dtype)
    for name in ("zeros_like", "ones_like"):
        mine = getattr(cugn, name)(cugn.tensor(source))
        same(mine, getattr(torch, name)(torch.tensor(source)))
        same(getattr(cugn, name)(source, dtype=np.float32),
             getattr(torch, name)(torch.tensor(source), dtype=torch.float32))
    assert cugn.zeros_like(cugn.zeros(2), requires_grad=True).requires_grad


@pytest.mark.parametrize("args", [(5,), (1, 10, 3), (10, 0, -3), (0, 0), (0.5,), (0, 1, 0.1),
                                  (-1, -3, -0.5), (0, 10, 0.3), (2, 7.5)])
def test_arange(args):
    mine, theirs = cugn.arange(*args), torch.arange(*args)
    # torch's vector loop rounds differently from its scalar one: within a rounding.
    scale = np.abs(theirs.numpy()).max() if theirs.numel() else 0.0
    same(mine, theirs, atol=np.spacing(np.float32(scale)) if mine.dtype == np.float32 else 0)
    same(cugn.arange(*args, dtype=np.float64), torch.arange(*args, dtype=torch.float64),
         atol=np.spacing(scale))


@pytest.mark.parametrize("args", [(0, 1, 0), (0, -1, 1), (5, 0, 2)])
def test_arange_bad_steps(args):
    with pytest.raises(RuntimeError):
        torch.arange(*args)
    with pytest.raises(ValueError, match="step"):
        cugn.arange(*args)


@pytest.mark.parametrize("args", [(0, 1, 5), (-3.5, 7.25, 13), (0, 1, 1), (0, 1, 0), (1, 0, 7),
                                  (-1000.0, 1.7, 333)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_linspace(args, dtype):
    mine, theirs = cugn.linspace(*args, dtype=dtype), torch.linspace(
        *args, dtype=TORCH_DTYPES[dtype])
    scale = np.abs(theirs.numpy()).max() if theirs.numel() else 0.0
    same(mine, theirs, atol=np.spacing(dtype(scale)))  # within one rounding of torch
    if args[2]:
        assert mine.numpy()[0] == theirs.numpy()[0] and mine.numpy()[-1] == theirs.numpy()[-1]
    same(cugn.linspace(0, 10, 11, dtype=np.int64), torch.linspace(0, 10, 11, dtype=torch.int64))


@pytest.mark.parametrize("args", [(3,), (2, 4), (4, 2), (0,)])
def test_eye(args):
    same(cugn.eye(*args), torch.eye(*args))
    same(cugn.eye(*args, dtype=np.int64), torch.eye(*args, dtype=torch.int64))


def test_random_factories_draw_the_right_values():
    cugn.manual_seed(0)
    normal, uniform = cugn.randn(200_000), cugn.rand(400, 500)
    assert normal.dtype == uniform.dtype == np.float32 and uniform.shape == (400, 500)
    assert abs(normal.numpy().mean()) < 0.01 and abs(normal.numpy().std() - 1) < 0.01
    assert uniform.numpy().min() >= 0 and uniform.numpy().max() < 1
    assert abs(uniform.numpy().mean() - 0.5) < 0.01
    integers = cugn.randint(3, 7, (10_000,))
    assert integers.dtype == torch.randint(3, 7, (1,)).numpy().dtype == np.int64
    assert set(np.unique(integers.numpy())) == {3, 4, 5, 6}
    assert set(np.unique(cugn.randint(2, size=(1000,)).numpy())) == {0, 1}
    assert cugn.randn(2, 3, dtype=np.float64).dtype == np.float64
    assert cugn.rand((2, 3), dtype=np.float16).dtype == np.float16
    assert cugn.randn(3, requires_grad=True).requires_grad


def test_manual_seed_reproduces_draws_initializers_and_dropout():
    def draws():
        layer = cugn.layers.Dense(4, kernel_initializer="glorot_uniform")
        layer.build((None, 3))
        dropped = cugn.layers.Dropout(0.5)(np.ones((2, 8), np.float32), training=True)
        return [cugn.randn(3).numpy(), cugn.rand(2).numpy(), cugn.randint(100, (4,)).numpy(),
                layer.kernel.numpy(), dropped.numpy()]

    cugn.manual_seed(1234)
    first = draws()
    cugn.manual_seed(1234)
    for a, b in zip(first, draws()):
        np.testing.assert_array_equal(a, b)
    cugn.manual_seed(4321)
    assert not np.array_equal(first[0], draws()[0])


@pytest.mark.parametrize("call, error, message", [
    (lambda: cugn.zeros(2, -1), ValueError, "negative"),
    (lambda: cugn.ones(2.5), TypeError, "size must be ints"),
    (lambda: cugn.zeros(2, dtype=np.int64, requires_grad=True), TypeError, "floating"),
    (lambda: cugn.randint(5, 5, (2,)), ValueError, "low < high"),
    (lambda: cugn.randint(5), TypeError, "size"),
    (lambda: cugn.randn(2, dtype=np.int64), TypeError, "floating"),
    (lambda: cugn.linspace(0, 1, -1), ValueError, "steps"),
    (lambda: cugn.full((2,), "a"), TypeError, "fill_value"),
    (lambda: cugn.zeros_like([1.0]), TypeError, "input"),
    (lambda: cugn.manual_seed(-1), ValueError, "seed"),
    (lambda: cugn.manual_seed(1.5), ValueError, "seed"),
    (lambda: cugn.zeros(2, device="tpu"), ValueError, "device"),
])
def test_factory_arguments_are_checked(call, error, message):
    with pytest.raises(error, match=message):
        call()
