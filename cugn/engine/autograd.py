"""The backward pass: walk the tape from the outputs to the leaves.

The walk is iterative (a topological order by Kahn's algorithm), so graphs of
any depth work. ``backward`` accumulates into the leaves' ``.grad``; ``grad``
returns the gradients of chosen inputs and touches no ``.grad``. A leaf's
gradient is delivered (its hooks run, then it is accumulated, then its
post-accumulate hooks run) as soon as the last node that feeds it has run, not
at the end of the walk: data-parallel training starts reducing the gradients
of the last layers while the backward of the first ones is still to come.
"""

from .. import backend
from ..profiling import nvtx
from .grad_mode import set_grad_enabled
from .tensor import Tensor


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate the gradients of ``tensors`` into the leaves they depend on."""
    roots, seeds = _roots_and_seeds(tensors, grad_tensors)
    retain_graph = create_graph if retain_graph is None else retain_graph
    with nvtx.range("autograd.backward", category="backward"):
        _run(roots, seeds, retain_graph, create_graph, inputs=None)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs``, as a tuple of Tensors.

    Like ``torch.autograd.grad``: nothing is accumulated into ``.grad``; an input
    that the outputs do not depend on is an error unless ``allow_unused``, and
    then its gradient is None.
    """
    outputs = _as_list(outputs, "outputs")
    inputs = _as_list(inputs, "inputs")
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, Tensor) or not tensor.requires_grad:
            raise RuntimeError(f"inputs[{position}] is not a Tensor that requires grad")
    if grad_outputs is not None:
        grad_outputs = _as_list(grad_outputs, "grad_outputs")
    roots, seeds = _roots_and_seeds(outputs, grad_outputs)
    retain_graph = create_graph if retain_graph is None else retain_graph
    with nvtx.range("autograd.grad", category="backward"):
        grads = _run(roots, seeds, retain_graph, create_graph, inputs=inputs)
    for position, value in enumerate(grads):
        if value is None and not allow_unused:
            raise RuntimeError(
                f"inputs[{position}] was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
    return tuple(grads)


def _as_list(values, name):
    if isinstance(values, Tensor):
        return [values]
    if isinstance(values, (list, tuple)):
        return list(values)
    raise TypeError(f"{name} must be a Tensor or a sequence of Tensors, got {type(values).__name__}")


def _roots_and_seeds(tensors, grad_tensors):
    tensors = _as_list(tensors, "tensors")
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    if len(grad_tensors) != len(tensors):
        raise ValueError(f"got {len(grad_tensors)} gradients for {len(tensors)} tensors")
    seeds = []
    for position, (tensor, seed) in enumerate(zip(tensors, grad_tensors)):
        if not isinstance(tensor, Tensor) or not tensor.requires_grad:
            raise RuntimeError(
                f"element {position} of tensors does not require grad and has no grad_fn"
            )
        if seed is None:
            if tensor.numel() != 1:
                raise RuntimeError(
                    f"gradient can be implicit only for one-element outputs; tensor "
                    f"{position} has shape {tensor.shape}: pass gradient="
                )
            xp = backend.array_module(tensor.data)
            seed = Tensor(xp.ones_like(tensor.data))
        else:
            seed = seed if isinstance(seed, Tensor) else Tensor(seed)
            if seed.shape != tensor.shape:
                raise RuntimeError(
                    f"gradient of shape {seed.shape} does not match tensor {position} "
                    f"of shape {tensor.shape}"
                )
        seeds.append(seed)
    return tensors, seeds


def _run(roots, seeds, retain_graph, create_graph, inputs):
    with set_grad_enabled(create_graph):
        walk = _Walk(inputs, create_graph, seeds)
        for root, seed in zip(roots, seeds):
            if root.grad_fn is None:
                walk.deliver_to_leaf(root, seed)
            else:
                walk.add_to_buffer(root.grad_fn, root._output_index, seed)
        order = _topological_order({root.grad_fn for root in roots if root.grad_fn is not None})
        runnable = walk.nodes_that_reach_inputs(order)
        walk.count_leaf_edges(order)
        for node in order:
            buffer = walk.buffers.pop(node, None)
            if buffer is None:
                walk.node_done(node)
                continue
            grad_outputs = walk.finish_output_grads(node, buffer)
            if runnable is not None and node not in runnable:
                walk.node_done(node)
                continue
            profiled = nvtx.flag.on  # a group_norm.backward range per node when on
            if profiled:
                nvtx.push_backward(node.function)
            try:
                grad_inputs = node.apply_backward(grad_outputs)
            finally:
                if profiled:
                    nvtx.pop()
            if not retain_graph:
                node.release()
            for edge, value in zip(node.edges, grad_inputs):
                if edge is None or value is None:
                    continue
                value = _checked_grad(node, edge, value)
                if edge.leaf is not None:
                    walk.deliver_to_leaf(edge.leaf, value)
                else:
                    walk.add_to_buffer(edge.node, edge.index, value)
            walk.node_done(node)
        walk.finish_leaves()
        return walk.captured


def _topological_order(root_nodes):
    """Nodes ordered so that each comes after every node that feeds it a gradient."""
    dependencies = {}
    stack = list(root_nodes)
    seen = set(root_nodes)
    while stack:
        node = stack.pop()
        for edge in node.edges:
            if edge is None or edge.node is None:
                continue
            dependencies[edge.node] = dependencies.get(edge.node, 0) + 1
            if edge.node not in seen:
                seen.add(edge.node)
                stack.append(edge.node)
    ready = [node for node in root_nodes if node not in dependencies]
    order = []
    while ready:
        node = ready.pop()
        order.append(node)
        for edge in node.edges:
            if edge is None or edge.node is None:
                continue
            dependencies[edge.node] -= 1
            if dependencies[edge.node] == 0:
                ready.append(edge.node)
    return order


class _Walk:
    """The state of one backward pass: gradient buffers per node, and either the
    leaves to accumulate into or the inputs whose gradients are captured."""

    def __init__(self, inputs, create_graph, seeds):
        self.create_graph = create_graph
        self.buffers = {}
        self.shared = {id(_memory_owner(seed.data)) for seed in seeds}
        self.capturing = inputs is not None
        self.captured = [None] * len(inputs) if self.capturing else None
        self.leaf_targets = {}
        self.node_targets = {}
        self.leaf_sums = {}  # id(leaf) -> [leaf, summed gradient], in order of arrival
        self.edges_left = {}  # id(leaf) -> nodes of the walk still to run with an edge to it
        for position, tensor in enumerate(inputs or ()):
            if tensor.grad_fn is None:
                self.leaf_targets.setdefault(id(tensor), []).append(position)
            else:
                key = (tensor.grad_fn, tensor._output_index)
                self.node_targets.setdefault(key, []).append(position)

    def add_to_buffer(self, node, index, value):
        buffer = self.buffers.get(node)
        if buffer is None:
            buffer = self.buffers[node] = [None] * len(node.output_meta)
        buffer[index] = value if buffer[index] is None else buffer[index] + value

    def finish_output_grads(self, node, buffer):
        """Run the output hooks, capture, and fill outputs that got no gradient with zeros."""
        hooks, targets = node.output_hooks, self.node_targets
        for index, value in enumerate(buffer):
            if value is None:
                shape, dtype = node.output_meta[index]
                buffer[index] = Tensor(backend.zeros(shape, dtype, node.device))
                continue
            if hooks:
                buffer[index] = value = _run_hooks(hooks.get(index), value)
            if targets:
                for position in targets.get((node, index), ()):
                    self._capture(position, value)
        return buffer

    def deliver_to_leaf(self, leaf, value):
        """Add one contribution to a leaf's gradient; the sum is delivered by finish_leaves.
        grad() leaves the leaves it does not capture alone (their hooks do not run)."""
        if self.capturing and id(leaf) not in self.leaf_targets:
            return
        pending = self.leaf_sums.get(id(leaf))
        if pending is None:
            self.leaf_sums[id(leaf)] = [leaf, value]
        else:
            pending[1] = pending[1] + value

    def count_leaf_edges(self, order):
        """Count, per leaf, the edges that nodes of the walk have to it."""
        for node in order:
            for edge in node.edges:
                if edge is not None and edge.leaf is not None:
                    key = id(edge.leaf)
                    self.edges_left[key] = self.edges_left.get(key, 0) + 1

    def node_done(self, node):
        """``node`` has run (or was passed over): a leaf it was the last to feed is complete."""
        for edge in node.edges:
            if edge is None or edge.leaf is None:
                continue
            key = id(edge.leaf)
            self.edges_left[key] -= 1
            if self.edges_left[key] == 0:
                pending = self.leaf_sums.pop(key, None)
                if pending is not None:
                    self._finish_leaf(*pending)

    def finish_leaves(self):
        """Finish the leaves still pending at the end of the walk (roots that are leaves)."""
        for leaf, value in self.leaf_sums.values():
            self._finish_leaf(leaf, value)
        self.leaf_sums.clear()

    def _finish_leaf(self, leaf, value):
        """Run the leaf's hooks once, on its summed gradient (as PyTorch does), then
        capture it, or accumulate it into ``.grad`` and run the post-accumulate hooks."""
        value = _run_hooks(leaf._hooks, value)
        if self.capturing:
            for position in self.leaf_targets.get(id(leaf), ()):
                self._capture(position, value)
            return
        if leaf.grad is not None:
            leaf.grad = leaf.grad + value
        elif self.create_graph:
            leaf.grad = value
        else:
            leaf.grad = Tensor(self._own_array(value.data))
        for hook in leaf._post_accumulate_hooks or ():
            hook(leaf)

    def _own_array(self, array):
        """``array``, or a copy of it where it may not become a .grad as it is: memory
        that a seed or another leaf's grad already uses (no two .grad arrays, or a .grad
        and the caller's seed, may share memory), or a broadcast or otherwise strided
        view (read-only on NumPy; on CuPy an in-place update of it would write one
        element many times). A fresh result seen through a reshape is kept."""
        owner = _memory_owner(array)
        if id(owner) in self.shared or not array.flags.c_contiguous \
                or not getattr(array.flags, "writeable", True):
            array = owner = array.copy()
        self.shared.add(id(owner))
        return array

    def _capture(self, position, value):
        previous = self.captured[position]
        self.captured[position] = value if previous is None else previous + value

    def nodes_that_reach_inputs(self, order):
        """With captured inputs, the nodes whose backward leads to one; None otherwise."""
        if not self.capturing:
            return None
        reaching = set()
        for node in reversed(order):
            for edge in node.edges:
                if edge is None:
                    continue
                if edge.leaf is not None:
                    hit = id(edge.leaf) in self.leaf_targets
                else:
                    hit = edge.node in reaching or (edge.node, edge.index) in self.node_targets
                if hit:
                    reaching.add(node)
                    break
        return reaching


def _checked_grad(node, edge, value):
    value = value if isinstance(value, Tensor) else Tensor(value)
    if value.data.shape != edge.shape:
        raise RuntimeError(
            f"{node.name}.backward returned a gradient of shape {value.shape} "
            f"for an input of shape {edge.shape}"
        )
    if value.data.dtype != edge.dtype:
        value = value.to(dtype=edge.dtype)
    return value


def _run_hooks(hooks, value):
    """Each hook sees the gradient and may return a replacement (a Tensor or an array)."""
    for hook in hooks or ():
        replaced = hook(value)
        if replaced is not None:
            value = replaced if isinstance(replaced, Tensor) else Tensor(replaced)
    return value


def _memory_owner(array):
    """The object that owns ``array``'s memory: the end of its chain of bases."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array
