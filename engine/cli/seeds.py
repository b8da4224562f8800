"""``seir seeds from-images``: the command line of seir.engine.seeds.from_images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seir.engine.errors import SeirError
from seir.engine.seeds import (
    DEFAULT_SIMILARITY,
    EMBEDDINGS,
    IMAGE_SUFFIXES,
    MAX_SEED_IMAGES,
    clip_embeddings,
    from_images,
    group_images,
    images_in,
    read_texts,
    seed_lines,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``seir seeds from-images``."""
    seeds = commands.add_parser("seeds", help="seed file utilities").add_subparsers(dest="seeds", required=True)
    command = seeds.add_parser(
        "from-images", help="write a JSONL seed file from a folder of pictures: one seed per picture or per group of "
                            "related pictures", description=from_images.__doc__,
        formatter_class=argparse.RawTextHelpFormatter)
    command.add_argument("dir", type=Path, help="folder of pictures (searched recursively)")
    command.add_argument("--out", type=Path, required=True, help="the seed file to write (JSONL)")
    command.add_argument("--texts", type=Path, default=None,
                         help="topics or captions, one per line or a JSON list: seed N gets text N (cycled); with "
                              "--edit, the change each seed asks of its picture")
    command.add_argument("--edit", action="store_true",
                         help="each seed asks for an edit of its (first) picture; the job's image role then needs an "
                              "edit backend, e.g. diffusers-image-to-image")
    command.add_argument("--group-by", choices=("pixels", "clip", "none"), default="pixels",
                         help="how related pictures are found (default: pixels, which needs no model)")
    command.add_argument("--model", default="openai/clip-vit-base-patch32",
                         help="the CLIP-style model for --group-by clip: hub id, local folder or tiny:clip")
    command.add_argument("--similarity", type=float, default=None,
                         help="least cosine similarity of two pictures to group them (default: pixels "
                              f"{DEFAULT_SIMILARITY['pixels']}, clip {DEFAULT_SIMILARITY['clip']})")
    command.add_argument("--max-images", type=int, default=MAX_SEED_IMAGES,
                         help=f"most pictures in one seed (1 to {MAX_SEED_IMAGES})")
    command.set_defaults(handler=_from_images)


def _from_images(args: argparse.Namespace) -> int:
    if not 1 <= args.max_images <= MAX_SEED_IMAGES:
        raise SeirError(f"--max-images must be 1..{MAX_SEED_IMAGES} (a seed brings at most {MAX_SEED_IMAGES} images)")
    try:
        paths = images_in(args.dir)
        texts = read_texts(args.texts) if args.texts else []
    except ValueError as err:
        raise SeirError(str(err)) from None
    if not paths:
        raise SeirError(f"{args.dir} holds no pictures ({', '.join(sorted(IMAGE_SUFFIXES))})")
    embed = clip_embeddings(args.model) if args.group_by == "clip" else EMBEDDINGS.get(args.group_by)
    similarity = args.similarity if args.similarity is not None else DEFAULT_SIMILARITY.get(args.group_by, 1.0)
    grouping = group_images(paths, embed, similarity, args.max_images)
    for path, reason in grouping.skipped:
        print(f"seir: skipped {path}: {reason}", file=sys.stderr)
    lines = seed_lines(grouping.groups, args.out, texts, args.edit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    grouped = sum(len(group) for group in grouping.groups)
    print(f"{args.out}: {len(lines)} seeds from {grouped} pictures ({args.group_by}); {len(grouping.skipped)} skipped")
    return 0
