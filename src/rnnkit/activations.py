"""Activation functions by name, for cells built from a configuration or the command line."""

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "identity": lambda x: x,
}


def get_activation(activation):
    """A callable for ``activation``: a name from ``ACTIVATIONS`` or a callable (returned as is)."""
    if callable(activation):
        return activation
    if activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"activation: expected a callable or one of {sorted(ACTIVATIONS)}, got {activation!r}"
    )


def activation_name(activation):
    """The name under which ``activation`` is registered, or None for a user's own function."""
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return name
    return None
