"""``Sequential``: a stack of layers applied one after the other."""

import functools
import inspect

from .. import backend
from .layer import Layer


@functools.lru_cache(maxsize=None)
def _call_takes_training(layer_class):
    return "training" in inspect.signature(layer_class.call).parameters


def _takes_training(layer):
    return _call_takes_training(type(layer))


class Sequential(Layer):
    """Layers called in order; its weights, losses and trainable flag are those of
    its layers. ``model(x, training=True)`` passes ``training`` to the layers whose
    ``call`` takes it (Dropout)."""

    autocast = False  # each layer casts its own inputs

    def __init__(self, layers=None, **kwargs):
        super().__init__(**kwargs)
        self._layers = []
        self._input_shape = None  # of the first call; summary() derives the rest from it
        for layer in layers or ():
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a cugn Layer, got {type(layer).__name__}")
        if layer is self or layer in self._layers:
            raise ValueError(f"layer {layer.name!r} is already in {self.name}")
        self._layers.append(layer)
        return self

    @property
    def layers(self):
        return list(self._layers)

    # ------------------------------------------------------------- weights
    @property
    def weights(self):
        return [w for layer in self._layers for w in layer.weights]

    @property
    def losses(self):
        return [loss for layer in self._layers for loss in layer.losses]

    @Layer.trainable.setter
    def trainable(self, flag):
        self._trainable = bool(flag)
        for layer in self._layers:
            layer.trainable = flag

    def to(self, device):
        self._device = backend.parse_device(device)
        for layer in self._layers:
            layer.to(device)
        return self

    # ------------------------------------------------------------- calling
    def call(self, inputs, training=False):
        if not self._layers:
            raise ValueError(f"{self.name} has no layers: add some first")
        x = inputs
        for layer in self._layers:
            x = layer(x, training=training) if _takes_training(layer) else layer(x)
        return x

    def build(self, input_shape):
        self._input_shape = tuple(input_shape)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._layers:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def summary(self, print_fn=print):
        """Print each layer's name, type, output shape (after a call) and weight count."""
        rows = [("Layer (type)", "Output shape", "Params")]
        shape = None if self._input_shape is None else (None,) + self._input_shape[1:]
        for layer in self._layers:
            if shape is not None:
                shape = tuple(layer.compute_output_shape(shape))
            count = sum(w.numel() for w in layer.weights)
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         "?" if shape is None else str(shape), str(count)))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f'Model: "{self.name}"']
        rule = "-" * (sum(widths) + 4)
        for index, row in enumerate(rows):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}")
            if index == 0:
                lines.append(rule)
        trainable = sum(w.numel() for w in self.trainable_weights)
        total = sum(w.numel() for w in self.weights)
        lines += [rule, f"Total params: {total}", f"Trainable params: {trainable}",
                  f"Non-trainable params: {total - trainable}"]
        print_fn("\n".join(lines))

    # ------------------------------------------------------------- config
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                       for layer in self._layers],
        }

    @classmethod
    def from_config(cls, config):
        from . import LAYER_CLASSES

        config = dict(config)
        layers = []
        for spec in config.pop("layers", []):
            name = spec.get("class_name")
            if name not in LAYER_CLASSES:
                raise ValueError(f"Unknown layer class {name!r}; known: {sorted(LAYER_CLASSES)}")
            layers.append(LAYER_CLASSES[name].from_config(spec["config"]))
        return cls(layers, **config)
