"""``seir view``: a local web app over an output: its dialogues listed, filtered and opened, what each judge was
sent, people's verdicts recorded, and the judge's agreement with them.

Uses: the store, the queries and the exports' dialogue drawing.
"""

from seir.engine.view.server import Viewer, serve

__all__ = ["Viewer", "serve"]
