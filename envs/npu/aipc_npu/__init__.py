"""aipc's helper that runs INSIDE the isolated NPU environment (envs/npu/setup.sh builds it).

It uses only the standard library and what that environment has (torch, transformers 4.57,
intel-npu-acceleration-library 1.4.0); it never imports the main project (``pipeline``, pydantic).
The main environment runs it as ``<env>/bin/python -m aipc_npu ...`` with ``envs/npu`` on
PYTHONPATH (see ``pipeline/export/npu.py``). Commands (``python -m aipc_npu -h``):

* ``info``      versions of the environment (no heavy imports);
* ``compile``   quantize/compile a transformers checkpoint and ``torch.save`` it as an artifact;
* ``generate``  greedy chat generation from an artifact (sha256-checked before unpickling);
* ``logits``    teacher-forcing logits of token ids, saved as ``.npy``;
* ``serve``     a persistent worker answering JSON-line requests on stdin (what the runner uses).

Results are JSON on stdout (one object; ``serve``: one per line). Errors are
``{"ok": false, "error": {"kind", "message", "fix"}}`` with the exit code of ``EXIT_CODES``.
"""

__version__ = "1.0.0"

# Error kinds and their exit codes (they mirror pipeline.errors' classes).
EXIT_CODES = {
    "internal": 1,
    "usage": 2,
    "source": 3,
    "compile": 5,
    "integrity": 6,
    "environment": 7,
    "version_mismatch": 7,
    "context_length": 2,
}

# Files of the checkpoint copied next to model.pt (tokenizer, configs, chat template, license).
COPY_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
COPY_PATTERNS = ("LICENSE*", "NOTICE*")
MANIFEST = "aipc_export.json"
# The model file and the distributions a pickled model is tied to: it loads only where all three are the
# same (loader.py, the module every NPU bundle ships, is where the checks live).
from .loader import MODEL_FILE, PICKLE_TIED_TO  # noqa: E402,F401
VERSION_PACKAGES = (
    "intel-npu-acceleration-library",
    "torch",
    "transformers",
    "tokenizers",
    "openvino",
    "neural-compressor",
    "numpy",
    "safetensors",
)
