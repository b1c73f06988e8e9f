"""Stochastic gradient descent with momentum, as ``torch.optim.SGD`` computes it."""

from .optimizer import Optimizer, check_number


class SGD(Optimizer):
    """``g = grad + weight_decay * p``; with momentum, ``buf = momentum * buf +
    (1 - dampening) * g`` (``buf = g`` on the first step) and ``g = buf``, or
    ``g + momentum * buf`` with Nesterov; then ``p -= lr * g``."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                 nan_check=False):
        self.lr = check_number(lr, "lr")
        self.momentum = check_number(momentum, "momentum")
        self.dampening = check_number(dampening, "dampening")
        self.weight_decay = check_number(weight_decay, "weight_decay")
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        self.nesterov = bool(nesterov)
        super().__init__(params, nan_check)

    def _update(self, data, grad, state):
        g = grad + self.weight_decay * data if self.weight_decay else grad
        new_state = {}
        if self.momentum:
            previous = state.get("momentum_buffer")
            buffer = g.copy() if previous is None else \
                self.momentum * previous + (1 - self.dampening) * g
            new_state["momentum_buffer"] = buffer
            g = g + self.momentum * buffer if self.nesterov else buffer
        return (data - self.lr * g).astype(data.dtype, copy=False), new_state
