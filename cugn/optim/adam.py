"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW`` compute them."""

import math

from .. import backend
from .optimizer import Optimizer, check_number


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction; ``weight_decay`` adds
    ``weight_decay * p`` to the gradient (L2, as torch's Adam)."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 nan_check=False):
        self.lr = check_number(lr, "lr")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = (check_number(betas[0], "betas[0]", high=1.0),
                      check_number(betas[1], "betas[1]", high=1.0))
        self.eps = check_number(eps, "eps")
        self.weight_decay = check_number(weight_decay, "weight_decay")
        super().__init__(params, nan_check)

    def _update(self, data, grad, state):
        xp = backend.array_module(data)
        beta1, beta2 = self.betas
        step = state.get("step", 0) + 1
        if self.weight_decay and not self._decoupled:
            grad = grad + self.weight_decay * data
        if self.weight_decay and self._decoupled:
            data = data * (1 - self.lr * self.weight_decay)
        m = state.get("exp_avg", 0) * beta1 + (1 - beta1) * grad
        v = state.get("exp_avg_sq", 0) * beta2 + (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1 ** step)
        denominator = xp.sqrt(v) / math.sqrt(1 - beta2 ** step) + self.eps
        new_data = (data - step_size * m / denominator).astype(data.dtype, copy=False)
        return new_data, {"step": step, "exp_avg": m, "exp_avg_sq": v}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): ``p *= 1 - lr *
    weight_decay`` before the Adam update, which sees the plain gradient."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 nan_check=False):
        super().__init__(params, lr, betas, eps, weight_decay, nan_check)
