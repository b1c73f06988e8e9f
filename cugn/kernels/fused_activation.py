"""The activations group normalization can fuse into its output, by Keras's names."""

FUSED_ACTIVATIONS = ("silu", "relu", "gelu")  # gelu: exact, with erf (Keras's default)
ALIASES = {"swish": "silu"}


def check_activation(activation):
    """The canonical name of a fused ``activation`` (one of FUSED_ACTIVATIONS), or None."""
    if activation is None:
        return None
    if isinstance(activation, str):
        name = ALIASES.get(activation, activation)
        if name in FUSED_ACTIVATIONS:
            return name
    known = ", ".join(repr(a) for a in (None, *FUSED_ACTIVATIONS, *ALIASES))
    raise ValueError(f"activation must be one of {known}, got {activation!r}")
