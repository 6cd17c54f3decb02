"""The validation harness: one runner interface per backend, smoke generation and accuracy checks."""
