"""The training pieces on CuPy arrays give the CPU's numbers (on a GPU host)."""

import numpy as np
import pytest

import cugn
from cugn import losses
from cugn.functions.convolution import avg_pool2d, conv2d, max_pool2d
from cugn.optim import SGD, AdamW

pytestmark = pytest.mark.gpu


def _grads_on(device, fn, arrays):
    tensors = [cugn.tensor(a, device=device, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    out.sum().backward()
    return out.numpy(), [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_conv_and_pooling_match_the_cpu(data_format):
    rng = np.random.default_rng(0)
    shape = (2, 7, 6, 3) if data_format == "channels_last" else (2, 3, 7, 6)
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal((3, 3, 3, 4))

    def net(a, k):
        y = conv2d(a, k, None, 2, "same", data_format).tanh()
        return max_pool2d(y, 2, 1, "same", data_format) + avg_pool2d(y, 2, 1, "same", data_format)

    cpu_out, cpu_grads = _grads_on("cpu", net, [x, kernel])
    gpu_out, gpu_grads = _grads_on("cuda", net, [x, kernel])
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-10, atol=1e-12)
    for gpu, cpu in zip(gpu_grads, cpu_grads):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-10, atol=1e-12)


def test_losses_and_optimizers_match_the_cpu():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    results = {}
    for device in ("cpu", "cuda"):
        w = cugn.Parameter(cugn.tensor(logits, device=device).data)
        optimizers = [AdamW([w], lr=0.1), SGD([w], lr=0.1, momentum=0.9, nan_check=True)]
        for optimizer in optimizers:
            loss = losses.softmax_cross_entropy(w, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert (w.device == "cpu") == (device == "cpu")
        results[device] = w.numpy()
    np.testing.assert_allclose(results["cuda"], results["cpu"], rtol=1e-10)
