"""Process machinery, the top layer: the ``aipc`` entry point (:mod:`aipc.cli`), the warm worker that runs
the stage commands of one ``dvc repro`` as forks (:mod:`aipc.worker`), and the parallel runner behind
``aipc repro`` (:mod:`aipc.repro`).

It imports the command layer (``stages``), the harness (``validation``) and the library (``pipeline``);
none of them imports it. The library reaches it only through :mod:`pipeline.processes`, where the worker
registers itself.
"""
