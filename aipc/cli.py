"""The ``aipc`` console script (and ``python -m aipc``): the command layer's click group, with the
machinery's own ``repro`` command added, run in the repro's warm worker when that applies."""

from __future__ import annotations

import sys

import click


def group() -> click.Group:
    """``stages.cli.main`` with ``aipc repro`` (the parallel runner lives in this layer)."""
    from aipc.stages.cli import main

    from .repro_command import command as repro

    if "repro" not in main.commands:
        main.add_command(repro)
    return main


def entry() -> None:
    """Under ``dvc repro`` a heavy command runs in the repro's warm worker (:mod:`aipc.worker`: the toolchain
    imported once, a fork per stage); otherwise, or if that fails, here."""
    from .worker import delegate

    from .worker import install

    code = delegate(sys.argv)
    if code is not None:
        sys.exit(code)
    install()
    group()()
