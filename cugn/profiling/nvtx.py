"""NVTX ranges for cugn: what Nsight Systems and Nsight Compute show by name.

Every range is pushed in one NVTX domain, ``cugn``, under one of six
categories::

    op         group_norm.forward                     (every Function.apply)
    layer      GroupNormalization(group_norm).forward (every Layer.__call__)
    backward   autograd.backward, group_norm.backward (the walk, and each node)
    kernel     kernel:group_norm_forward_apply<float16, 8>  (each kernel launch)
    optimizer  Adam.step                              (``range(..., "optimizer")``)
    comm       allreduce.bucket, broadcast            (cugn.distributed's collectives)

Ranges are on by default exactly when a profiler has injected itself, which
Nsight tools announce with ``NVTX_INJECTION64_PATH``; ``CUGN_NVTX=1`` or
``CUGN_NVTX=0`` overrides that, and so does the switch, a call that also works
as a context manager restoring the previous state::

    cugn.profiling.nvtx(False)           # off from now on
    with cugn.profiling.nvtx(True):      # on inside, previous state after
        ...

When off, an annotated op pays one attribute read (``flag.on``): no nvtx call,
no string formatting. The ``nvtx`` package itself is imported at the first
range pushed, so ``import cugn`` does not pay for it.

Annotating code of one's own (an optimizer step, a training phase)::

    with cugn.profiling.nvtx.range("Adam.step", category="optimizer"):
        ...

    @cugn.profiling.nvtx.range("Adam.step", category="optimizer")
    def step(self): ...

and, in kernel host code, around each launch (the name is formatted only when
ranges are on)::

    with cugn.profiling.nvtx.kernel_range("group_norm_forward_apply", "float16", 8):
        kernel(grid, block, args)
"""

import functools
import os
import re
import sys
import types
import warnings

DOMAIN = "cugn"
# Registered in this order when the domain is first used, so the category ids
# (1..6) are the same in every process.
CATEGORIES = ("op", "layer", "backward", "kernel", "optimizer", "comm")
# ARGB colours per category in the timeline.
_COLORS = {"op": 0xFF4C8BF5, "layer": 0xFF34A853, "backward": 0xFFEA4335,
           "kernel": 0xFFFBBC05, "optimizer": 0xFF9C27B0, "comm": 0xFF00ACC1}
_ON_WORDS = {"1": True, "true": True, "on": True, "yes": True,
             "0": False, "false": False, "off": False, "no": False}


def default_enabled(environ=None):
    """Whether ranges start on: ``CUGN_NVTX`` if set, else whether a profiler injected NVTX."""
    environ = os.environ if environ is None else environ
    value = environ.get("CUGN_NVTX", "").strip()
    if not value:
        return "NVTX_INJECTION64_PATH" in environ
    try:
        return _ON_WORDS[value.lower()]
    except KeyError:
        raise ValueError(
            f"CUGN_NVTX must be 1 or 0 (or true/false, on/off, yes/no), got {value!r}"
        ) from None


class _Flag:
    __slots__ = ("on",)


# The hot-path check: the engine reads ``flag.on`` once per op. Set it only
# through the switch (``cugn.profiling.nvtx(enabled)``).
flag = _Flag()
flag.on = default_enabled()

_domain = None       # the nvtx Domain once resolved; None while nothing can be recorded
_resolved = False    # whether the domain was looked up
_attributes = {}     # cache key -> nvtx EventAttributes, so a repeated range formats nothing


def is_enabled():
    """Whether cugn pushes NVTX ranges now."""
    return flag.on


class _Switch:
    """What ``nvtx(enabled)`` returns: the new state is already set; used as a
    context manager, the previous state comes back on exit."""

    def __init__(self, enabled):
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, got {enabled!r}")
        self.previous = flag.on
        flag.on = enabled

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        flag.on = self.previous
        return False


def set_enabled(enabled):
    """Turn cugn's NVTX ranges on or off; also a context manager that restores the old state."""
    return _Switch(enabled)


# ----------------------------------------------------------------------- pushing


def _resolve_domain():
    """The ``cugn`` domain with its categories named, or None when nothing can be
    recorded: no profiler attached (nvtx hands out a no-op dummy) or no nvtx package."""
    global _domain, _resolved
    if not _resolved:
        _resolved = True
        try:
            import nvtx
        except ImportError:
            warnings.warn("cugn's NVTX ranges are on but the nvtx package is not installed "
                          "(pip install nvtx); no ranges will be emitted", RuntimeWarning,
                          stacklevel=4)
            return None
        domain = nvtx.get_domain(DOMAIN)
        if isinstance(domain, nvtx.Domain):
            for category in CATEGORIES:
                domain.get_category_id(category)
            _domain = domain
    return _domain


def _push(key, category, make_message, *args):
    """Push the range cached under ``key``; ``make_message(*args)`` names it on first use."""
    attributes = _attributes.get(key)
    if attributes is None:
        domain = _resolve_domain()
        if domain is None:
            return
        attributes = domain.get_event_attributes(make_message(*args), _COLORS[category],
                                                 category)
        _attributes[key] = attributes
    _domain.push_range(attributes)


def pop():
    """End the innermost cugn range of this thread (a no-op where none could be pushed)."""
    if _domain is not None:
        _domain.pop_range()


def _op_message(function, phase):
    return f"{op_name(function)}.{phase}"


def _layer_message(cls, name):
    return f"{cls.__name__}({name}).forward"


def _same(message):
    return message


def push_op(function):
    """``group_norm.forward`` for a Function subclass."""
    _push(function, "op", _op_message, function, "forward")


def push_backward(function):
    """``group_norm.backward`` for the node of a Function subclass."""
    _push((function, "backward"), "backward", _op_message, function, "backward")


def push_layer(layer):
    """``GroupNormalization(group_norm).forward`` for a layer."""
    cls, name = type(layer), layer.name
    _push((cls, name), "layer", _layer_message, cls, name)


def push(message, category):
    """Push a range named ``message`` in ``category``; pair it with ``pop()``."""
    _push((message, category), category, _same, message)


@functools.lru_cache(maxsize=None)
def op_name(function):
    """The op's name in ranges: ``Function.op_name`` if set, else the class name in
    snake_case (``GroupNorm`` -> ``group_norm``)."""
    name = getattr(function, "op_name", None)
    if name:
        return name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", function.__name__).lower()


def _check_category(category):
    if category not in _COLORS:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")


class range:  # noqa: A001 - the NVTX term; reached as nvtx.range
    """A cugn range: ``with range("Adam.step", category="optimizer"):`` or as a
    decorator. Costs one flag check when ranges are off. As a decorator it can
    wrap any number of concurrent calls; as a context manager, make one per
    ``with`` (it remembers whether its own enter pushed)."""

    __slots__ = ("message", "category", "pushed")

    def __init__(self, message, category="op"):
        if not isinstance(message, str) or not message:
            raise TypeError(f"message must be a non-empty string, got {message!r}")
        _check_category(category)
        self.message = message
        self.category = category
        self.pushed = False

    def __enter__(self):
        # Remembered, so the pop matches the push even if the switch flips inside.
        self.pushed = flag.on
        if self.pushed:
            push(self.message, self.category)
        return self

    def __exit__(self, *exc_info):
        if self.pushed:
            pop()
        return False

    def __call__(self, fn):
        message, category = self.message, self.category

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not flag.on:
                return fn(*args, **kwargs)
            push(message, category)
            try:
                return fn(*args, **kwargs)
            finally:
                pop()

        return wrapper


class _KernelRange:
    __slots__ = ("kernel", "template_args", "pushed")

    def __init__(self, kernel, template_args):
        self.kernel = kernel
        self.template_args = template_args

    def __enter__(self):
        self.pushed = flag.on
        if self.pushed:
            _push((self.kernel, self.template_args), "kernel", kernel_message, self.kernel,
                  *self.template_args)
        return self

    def __exit__(self, *exc_info):
        if self.pushed:
            pop()
        return False


def kernel_message(kernel, *template_args):
    """``kernel:group_norm_forward_apply<float16, 8>``; without template arguments
    ``kernel:NAME``."""
    if not template_args:
        return f"kernel:{kernel}"
    return f"kernel:{kernel}<{', '.join(str(arg) for arg in template_args)}>"


def kernel_range(kernel, *template_args):
    """A ``kernel`` range around one launch: ``with kernel_range("group_norm_forward_apply",
    "float"):``. The arguments are only formatted, once, when ranges are on."""
    return _KernelRange(kernel, template_args)


class _CallableModule(types.ModuleType):
    """Makes ``cugn.profiling.nvtx(enabled)`` the switch while the module keeps its API."""

    def __call__(self, enabled):
        return set_enabled(enabled)


sys.modules[__name__].__class__ = _CallableModule
