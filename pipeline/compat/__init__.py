"""Every private call into an upstream library, every patch of one and every version gate, one module per
upstream: :mod:`.optimum_intel`, :mod:`.nncf`, :mod:`.ortgenai_builder`, :mod:`.dvc` (the NPU environment's
neural-compressor patch, gated on its version, lives in that environment's ``aipc_npu.packing``).

Each module names the upstream versions it was written and tested against (its ``GATE``). The pipeline
itself runs only on the locked toolchain (:mod:`pipeline.toolchain` refuses drift from
requirements/lock.txt), so an unknown version reaches these modules only through a lock update;
tests/test_compat.py then fails, naming the module to re-check, until the module's ``GATE`` lists the new version.
"""

from __future__ import annotations

from .gate import Gate


def gates() -> list[Gate]:
    """Every upstream gate of the main environment."""
    from . import dvc, nncf, optimum_intel, ortgenai_builder  # each imports .gate, never this package

    return [optimum_intel.GATE, nncf.GATE, ortgenai_builder.GATE, dvc.GATE]
