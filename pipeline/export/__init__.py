"""Backend exporters: one module per backend, the same shape each (export + effective settings)."""
