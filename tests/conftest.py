"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from .hubserver import HubServer
except ImportError:
    from hubserver import HubServer


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[HubServer]:
    """A running local Hub-protocol server (tests/hubserver.py) with its blobs under tmp_path."""
    server = HubServer(root=tmp_path / "hub").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded SmolLM2 Phi-3 checkpoint (pipeline.sources.embedded), built once and cached
    under $AIPC_CACHE_DIR / $XDG_CACHE_HOME/aipc / ~/.cache/aipc, shared across test runs."""
    from pipeline.sources.embedded import embedded_checkpoint

    return embedded_checkpoint()


@pytest.fixture(scope="module")
def hub_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """One running HubServer shared by a test module (state accumulates across its tests)."""
    with HubServer(root=tmp_path_factory.mktemp("hub")) as server:
        yield server
