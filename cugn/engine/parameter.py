"""``Parameter``: a trainable leaf Tensor that knows its name, regularizer and constraint."""

from .tensor import Tensor


class Parameter(Tensor):
    """A layer's weight. ``requires_grad`` follows ``trainable``; ``penalty()`` is
    the regularization loss (None without a regularizer). cugn's optimizers apply
    ``constraint`` to each new value themselves (all or nothing, see optim);
    ``apply_constraint()`` is for a hand-written update."""

    __slots__ = ("name", "regularizer", "constraint")

    def __init__(self, data, name=None, trainable=True, regularizer=None, constraint=None):
        super().__init__(data, requires_grad=trainable)
        self.name = name
        self.regularizer = regularizer
        self.constraint = constraint

    @property
    def trainable(self):
        return self.requires_grad

    @trainable.setter
    def trainable(self, flag):
        self.requires_grad = flag

    def penalty(self):
        return None if self.regularizer is None else self.regularizer(self)

    def apply_constraint(self):
        """Project the data, replacing the old array (after a hand-written update)."""
        if self.constraint is not None:
            self.data = self.constraint(self.data)

    def __repr__(self):
        return f"Parameter(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, " \
               f"device={self.device!r}, trainable={self.trainable})"
