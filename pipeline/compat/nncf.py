"""NNCF: recognising its errors where optimum-intel lets them through."""

from __future__ import annotations

from .gate import Gate

GATE = Gate("nncf", ("3.4.0",), __name__)


def is_invalid_group_size(err: BaseException) -> bool:
    """Whether ``err`` is NNCF's refusal of a group size that does not divide a layer's input width."""
    from nncf.errors import InvalidGroupSizeError

    return isinstance(err, InvalidGroupSizeError)
