"""How a GroupNorm input is seen by every implementation: a 5-D view
``(N, M, G, D, S)``.

N is the batch axis, G the groups and D the channels per group; M is every
axis between the batch axis and the features, S every axis after them.
Statistics reduce over (M, D, S) for each (N, G). For one feature axis the view
is a free reshape: NHWC with ``axis=-1`` is ``(N, H*W, G, D, 1)``, NCHW with
``axis=1`` is ``(N, 1, G, D, H*W)``. Feature axes given as a list are taken
together in row-major order; when they are not adjacent they are moved next to
each other first, which is the only case that copies.
"""

import math


class GroupLayout:
    """The 5-D view of one input shape for a set of feature axes and a group count."""

    def __init__(self, shape, feature_axes, groups):
        self.shape = tuple(shape)
        self.feature_axes = tuple(feature_axes)
        self.groups = groups
        first, last = self.feature_axes[0], self.feature_axes[-1]
        if last - first + 1 == len(self.feature_axes):
            self.permutation = None
            before, after = self.shape[1:first], self.shape[last + 1:]
        else:
            rest = [a for a in range(1, len(self.shape)) if a not in self.feature_axes]
            self.permutation = (0, *rest, *self.feature_axes)
            before, after = tuple(self.shape[a] for a in rest), ()
        self.feature_shape = tuple(self.shape[a] for a in self.feature_axes)
        self.channels = math.prod(self.feature_shape)
        self.view = (self.shape[0], math.prod(before), groups, self.channels // groups,
                     math.prod(after))
        self.group_size = self.view[1] * self.view[3] * self.view[4]

    @property
    def batch(self):
        return self.shape[0]

    def to_view(self, x):
        """x (array or Tensor) as (N, M, G, D, S)."""
        if self.permutation is not None:
            x = _permute(x, self.permutation)
        return x.reshape(self.view)

    def from_view(self, y):
        """The inverse of ``to_view``."""
        if self.permutation is None:
            return y.reshape(self.shape)
        permuted = tuple(self.shape[a] for a in self.permutation)
        inverse = tuple(self.permutation.index(a) for a in range(len(self.shape)))
        return _permute(y.reshape(permuted), inverse)

    def params_view(self, param):
        """gamma or beta, shaped like the feature axes, as (1, 1, G, D, 1)."""
        return param.reshape(1, 1, self.groups, self.channels // self.groups, 1)

    def __eq__(self, other):
        return isinstance(other, GroupLayout) and (self.shape, self.feature_axes, self.groups) == (
            other.shape, other.feature_axes, other.groups)

    def __hash__(self):
        return hash((self.shape, self.feature_axes, self.groups))

    def __repr__(self):
        return (f"GroupLayout(shape={self.shape}, feature_axes={self.feature_axes}, "
                f"groups={self.groups}, view={self.view})")


def _permute(x, axes):
    # Tensors permute like PyTorch; NumPy and CuPy arrays call it transpose.
    return x.permute(axes) if hasattr(x, "permute") else x.transpose(axes)
