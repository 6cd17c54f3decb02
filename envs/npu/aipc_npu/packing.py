"""A vectorized, bit-identical ``WeightOnlyLinear.pack_tensor_with_numpy`` for neural-compressor 3.7.1.

intel-npu-acceleration-library 1.4.0 quantizes INT4/INT8 through neural-compressor's weight-only RTN,
whose ``export_compressed_model`` packs every quantized weight with ``pack_tensor_with_numpy``: a
Python loop over the packed columns (``in_features / n_pack`` of them), one ``astype`` and
``n_pack`` shifts per column. Measured at Phi-3-mini layer shapes (4 layers, int4, this project's
2-core machine): 29.2 s of the library's 34 s compile, 87%; per real 32-layer Phi-3-mini about 4 min.

:func:`pack` computes the same array with one ``astype`` of the whole weight and ``n_pack``
strided shifts: each output element is the OR of the same ``n_pack`` shifted, masked values in the
same dtype with the same wrap-around, so the bytes are equal (``tests/test_npu.py`` checks it against
the library's own function on odd and even widths, both compression dtypes and 4/8 bits, and the
compiled model's tensors with and without it). :func:`faster_packing` installs it only on the exact
neural-compressor version it was checked against; on any other version the library's loop runs.

The library is archived upstream; this is a drop-in for one method, not a fork.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger("aipc_npu")

CHECKED_VERSION = "3.7.1"


def pack(self, raw_tensor):
    """``WeightOnlyLinear.pack_tensor_with_numpy(raw_tensor)``, vectorized (same dtype, shape and bytes)."""
    import numpy as np
    import torch

    raw_array = raw_tensor.cpu().numpy()
    n_pack, bits = self.n_pack, self.bits
    target_len = int(np.ceil(raw_array.shape[1] / n_pack))
    target_dtype = torch.tensor(0, dtype=self.compression_dtype).numpy().dtype
    packed_array = np.zeros((raw_array.shape[0], target_len), dtype=target_dtype)
    mask = np.uint8(2**bits - 1)
    values = raw_array.astype(target_dtype)  # the loop's per-column astype, all columns at once
    values &= mask
    for e in range(n_pack):
        # column j*n_pack + e of the weight goes to bits [bits*e, bits*(e+1)) of packed column j
        shifted = np.left_shift(values[:, e::n_pack], bits * e)
        packed_array[:, : shifted.shape[1]] |= shifted
    return torch.from_numpy(packed_array).to(device=raw_tensor.device)


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neural-compressor")
    except PackageNotFoundError:
        return None


@contextlib.contextmanager
def faster_packing(enabled: bool = True) -> Iterator[bool]:
    """Within the block, neural-compressor packs with :func:`pack`; yields whether it does."""
    if not enabled or _installed_version() != CHECKED_VERSION:
        if enabled:
            log.info("neural-compressor %s is not %s: packing with its own loop", _installed_version(), CHECKED_VERSION)
        yield False
        return
    from neural_compressor.adaptor.torch_utils.model_wrapper import WeightOnlyLinear

    original = WeightOnlyLinear.__dict__["pack_tensor_with_numpy"]
    WeightOnlyLinear.pack_tensor_with_numpy = pack
    try:
        yield True
    finally:
        WeightOnlyLinear.pack_tensor_with_numpy = original
