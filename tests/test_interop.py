"""DLPack, NumPy and CUDA array interfaces, and the PyTorch GroupNorm adapter."""

import numpy as np
import pytest

import cugn


def test_numpy_array_protocol_shares_memory():
    t = cugn.tensor([1.0, 2.0, 3.0])
    view = np.asarray(t)
    view[0] = 7.0
    assert t.data[0] == 7.0
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    copied = np.array(t, copy=True)
    copied[1] = -1.0
    assert t.data[1] == 2.0
    with pytest.raises(ValueError, match="copy=False"):
        t.__array__(np.float64, copy=False)


def test_cpu_tensor_has_no_cuda_array_interface():
    assert not hasattr(cugn.tensor([1.0]), "__cuda_array_interface__")


def test_dlpack_round_trip_with_numpy_is_zero_copy():
    t = cugn.tensor(np.arange(6.0).reshape(2, 3))
    assert t.__dlpack_device__() == (1, 0)
    a = np.from_dlpack(t)
    a[1, 2] = 100.0
    assert t.data[1, 2] == 100.0
    back = cugn.from_dlpack(a, requires_grad=True)
    back.data[0, 0] = -5.0
    assert a[0, 0] == -5.0 and back.requires_grad
    with pytest.raises(TypeError, match="__dlpack__"):
        cugn.from_dlpack([1.0, 2.0])


def test_dlpack_with_torch_cpu_is_zero_copy():
    torch = pytest.importorskip("torch")
    source = torch.arange(4, dtype=torch.float32)
    t = cugn.from_dlpack(source)
    source[2] = 42.0
    assert t.data[2] == 42.0
    mine = cugn.tensor([1.0, 2.0])
    theirs = torch.from_dlpack(mine)
    theirs[1] = 9.0
    assert mine.data[1] == 9.0


@pytest.mark.gpu
def test_gpu_tensor_interfaces():
    cupy = pytest.importorskip("cupy")
    t = cugn.tensor([1.0, 2.0], device="cuda")
    interface = t.__cuda_array_interface__
    assert interface["data"][0] == t.data.data.ptr
    shared = cupy.asarray(t)
    shared[0] = 5.0
    assert float(t.data[0].get()) == 5.0
    assert cugn.from_dlpack(shared).device == t.device
    with pytest.raises(TypeError, match="numpy"):
        np.asarray(t)


def test_dlpack_with_jax_cpu():
    jnp = pytest.importorskip("jax.numpy")
    source = jnp.arange(8.0, dtype=jnp.float32)
    t = cugn.from_dlpack(source)
    assert t.data.ctypes.data == source.unsafe_buffer_pointer()  # the same memory
    np.testing.assert_array_equal(t.numpy(), np.arange(8.0))
    # JAX copies buffers that miss its alignment, so only the values are compared here.
    mine = cugn.tensor(np.linspace(0, 1, 5))
    np.testing.assert_array_equal(np.asarray(jnp.from_dlpack(mine)), mine.numpy())
