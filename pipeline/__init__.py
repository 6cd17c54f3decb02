"""aipc: turn Phi-3 checkpoints into validated, publishable bundles for Intel AI PCs."""

__version__ = "0.1.0"
