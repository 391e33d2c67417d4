"""Frozen dataclasses that are JAX pytrees: arrays are data, choices are static.

Cells keep a constructor that takes sizes and a key (``BasicRNNCell(3, 5, key=k)``), so the
pytree is rebuilt without calling ``__init__``: ``unflatten`` fills the fields directly.
"""

import dataclasses

import jax


def static_field(**kwargs):
    """A dataclass field that is part of the tree structure (hashable, not an array)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls):
    """Make ``cls`` a frozen dataclass registered as a pytree (custom ``__init__`` allowed)."""
    cls = dataclasses.dataclass(frozen=True, init=False, eq=False, repr=False)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))

    def flatten_with_keys(obj):
        children = [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in data]
        return children, tuple(getattr(obj, n) for n in meta)

    def flatten(obj):
        return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in meta)

    def unflatten(meta_values, children):
        return build(cls, **dict(zip(data, children)), **dict(zip(meta, meta_values)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    cls.__repr__ = _repr
    return cls


def set_fields(obj, **values):
    """Set the fields of a frozen dataclass ``obj``: the one way an ``__init__`` fills them."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def build(cls, **values):
    """An instance of ``cls`` with its fields set to ``values``, without calling ``__init__``."""
    obj = object.__new__(cls)
    set_fields(obj, **values)
    return obj


def replace(obj, **changes):
    """A copy of a pytree dataclass with some fields changed (``__init__`` is not called)."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"replace: {type(obj).__name__} has no field(s) {sorted(unknown)}")
    return build(type(obj), **{**values, **changes})


def _repr(obj):
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        shape = getattr(value, "shape", None)
        if shape is not None:
            parts.append(f"{f.name}={getattr(value, 'dtype', '')}{list(shape)}")
        else:
            parts.append(f"{f.name}={getattr(value, '__name__', value)!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"
