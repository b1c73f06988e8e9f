"""Keras-format serialization of initializers, regularizers and constraints.

An object travels as ``{"module": ..., "class_name": ..., "config": {...},
"registered_name": None}``, exactly as Keras writes it, so configs move
between cugn and Keras in both directions.
"""


class Serializable:
    """Base of initializers, regularizers and constraints: a config of the
    constructor's arguments, and construction back from it."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def serialize(obj, module):
    """The Keras dict for ``obj`` (an instance of one of cugn's classes), or None."""
    if obj is None:
        return None
    if not hasattr(obj, "get_config"):
        raise TypeError(f"cannot serialize {obj!r}: give it a get_config() method "
                        f"(subclass one of cugn's base classes)")
    return {"module": module, "class_name": type(obj).__name__, "config": obj.get_config(),
            "registered_name": None}


def deserialize(spec, classes, aliases, kind):
    """An object from None, an instance, a callable, a name or a Keras dict.

    ``classes`` maps class names to classes, ``aliases`` snake_case names to
    class names; ``kind`` ("initializer", ...) names the thing in errors.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        name = aliases.get(spec, spec)
        if name not in classes:
            raise ValueError(f"Unknown {kind}: {spec!r}. Known: {sorted(aliases)}")
        return classes[name]()
    if isinstance(spec, dict):
        name = spec.get("class_name")
        name = aliases.get(name, name)
        if name not in classes:
            raise ValueError(f"Unknown {kind}: {spec!r}")
        return classes[name].from_config(spec.get("config") or {})
    if callable(spec):
        return spec
    raise ValueError(f"Could not interpret {kind}: {spec!r}")
