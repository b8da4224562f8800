"""The command line (``seir ...``): main.py parses and dispatches, importing each command's room only when that
command runs; cluster.py submits and follows Ray jobs; seeds.py is ``seir seeds from-images``.

The top layer: it may use every package of the engine, and none of them uses it.
"""

from seir.engine.cli.main import main

__all__ = ["main"]
