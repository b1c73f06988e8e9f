"""Asking for a CUDA device where there is none gives one sentence saying why: CuPy
missing, no driver, or no device. CuPy is replaced by stand-ins, so that every case
runs on any machine."""

import sys
import types

import pytest

import cugn
from cugn import backend

INSUFFICIENT_DRIVER, NO_DEVICE = 35, 100


class FakeCUDARuntimeError(Exception):
    def __init__(self, status):
        super().__init__(f"cudaError {status}")
        self.status = status


def fake_cupy(device_count):
    """A CuPy stand-in whose runtime reports ``device_count`` devices, or raises it
    when it is an exception."""
    def get_device_count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count,
                                    CUDARuntimeError=FakeCUDARuntimeError)
    device = types.SimpleNamespace(id=0)
    cuda = types.SimpleNamespace(runtime=runtime, Device=lambda *index: device)
    return types.SimpleNamespace(cuda=cuda, ndarray=type("ndarray", (), {}))


@pytest.fixture
def cupy_as(monkeypatch):
    def install(module):
        monkeypatch.setitem(sys.modules, "cupy", module)
        monkeypatch.setattr(backend, "_device_count", None)
    return install


@pytest.mark.parametrize("make", [
    lambda device: cugn.tensor([1.0], device=device),
    lambda device: cugn.zeros(2, device=device),
    lambda device: cugn.randn(2, device=device),
    lambda device: cugn.tensor([1.0]).to(device),
    lambda device: cugn.layers.Dense(2).to(device),
])
@pytest.mark.parametrize("cupy, message", [
    (None, r"^device 'cuda' needs CuPy, which is not installed: pip install 'cugn\[cuda13\]'"),
    (fake_cupy(FakeCUDARuntimeError(INSUFFICIENT_DRIVER)),
     r"^device 'cuda' is not available on this machine: it has no NVIDIA driver"),
    (fake_cupy(FakeCUDARuntimeError(NO_DEVICE)),
     r"^device 'cuda' is not available on this machine: the NVIDIA driver sees no CUDA device"),
    (fake_cupy(0),
     r"^device 'cuda' is not available on this machine: the NVIDIA driver sees no CUDA device"),
], ids=["no-cupy", "no-driver", "no-device", "zero-devices"])
def test_a_missing_cuda_device_is_named_in_one_sentence(make, cupy, message, cupy_as):
    cupy_as(cupy)  # None makes `import cupy` raise ImportError
    with pytest.raises(RuntimeError, match=message) as error:
        make("cuda")
    assert str(error.value).count(". ") == 0 and "device='cpu'" in str(error.value)


def test_a_device_index_past_the_last_is_named(cupy_as):
    cupy_as(fake_cupy(2))
    with pytest.raises(RuntimeError, match=r"device 'cuda:2' does not exist: CuPy sees 2 CUDA "
                                           r"devices \(cuda:0 to cuda:1\)"):
        backend.parse_device("cuda:2")
    assert backend.parse_device("cuda:1") == "cuda:1"
    assert backend.parse_device("cuda") == "cuda:0"


@pytest.mark.skipif(backend.cuda_available(), reason="this machine has a CUDA device")
def test_this_machine_without_a_gpu_says_so():
    with pytest.raises(RuntimeError, match=r"^device 'cuda' (needs CuPy|is not available)"):
        cugn.tensor([1.0], device="cuda")
