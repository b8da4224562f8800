"""The ``seir`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from seir import __version__
from seir.engine.errors import SeirError


def _run(args: argparse.Namespace) -> int:
    from seir.engine.runner import Runner
    from seir.engine.spec import load_job

    spec = load_job(args.job)
    Runner(spec, args.out, address=args.address).run()
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from seir.operators.backends.tiny import build_tiny_models

    for name, path in build_tiny_models(args.dir).items():
        print(f"{name}: {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seir", description=__doc__)
    parser.add_argument("--version", action="version", version=f"seir {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a job: generate, self-evaluate and refine dialogues")
    run.add_argument("job", type=Path, help="job spec (YAML)")
    run.add_argument("--out", type=Path, required=True, help="output folder (dataset, images, provenance.duckdb)")
    run.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                     help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    run.set_defaults(handler=_run)

    models = commands.add_parser("models", help="model utilities").add_subparsers(dest="models", required=True)
    build = models.add_parser("build-tiny", help="build the offline random-weight tiny models into DIR")
    build.add_argument("dir", type=Path)
    build.set_defaults(handler=_build_tiny)
    return parser


# Errors a user can fix get one clear line instead of a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (SeirError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("seir: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except _USER_ERRORS as err:
        if os.environ.get("SEIR_DEBUG"):
            raise
        print(f"seir: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
