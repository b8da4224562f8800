"""seir: generate, self-evaluate and refine interleaved image-text dialogues on Ray, with provenance in DuckDB."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from seir import __version__
from seir.engine.errors import SeirError

if TYPE_CHECKING:
    from seir.engine.run import Budget
    from seir.engine.spec import JobSpec


def _runner(args: argparse.Namespace) -> object:
    from seir.engine.run import Runner
    from seir.engine.spec import load_job

    spec = load_job(args.job)
    return Runner(spec, args.out, address=getattr(args, "address", None),
                  cache_dir=getattr(args, "cache", None), verbose=args.verbose, budget=_budget(args, spec))


def _budget(args: argparse.Namespace, spec: JobSpec) -> Budget:
    from seir.engine.run import Budget

    return Budget.of(spec, getattr(args, "max_calls", None), getattr(args, "max_tokens", None),
                     getattr(args, "max_gpu_hours", None), getattr(args, "target_accepted", None))


def _add_budget(command: argparse.ArgumentParser) -> None:
    command.add_argument("--max-calls", type=int, default=None, help="stop at a shard boundary once this many "
                         "model calls were computed (cached answers are free); run again with a larger cap to resume")
    command.add_argument("--max-tokens", type=int, default=None, help="the same cap on tokens in and out")
    command.add_argument("--max-gpu-hours", type=float, default=None, help="the same cap on GPU hours (busy time "
                         "times the role's num_gpus)")
    command.add_argument("--target-accepted", type=_positive, default=None, metavar="N", help="take seeds in order, "
                         "shard by shard, until N dialogues are accepted after dedup, then stop at a shard boundary "
                         "and write the version; run again with a larger N to go on (default: the job's "
                         "execution.target_accepted, else every seed)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_verbose(command: argparse.ArgumentParser) -> None:
    command.add_argument("--verbose", action="store_true", help="show model workers' output and library warnings "
                         "on the terminal (by default they go to OUT/logs/seir.log)")


def _validate(args: argparse.Namespace) -> int:
    from seir.engine.spec import job_summary, load_job, window_report

    spec = load_job(args.job)
    print(f"{args.job}: OK ({job_summary(spec)})")
    import transformers  # reading a model's config and tokenizer (and building a tiny one) is quiet here

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for line in window_report(spec):
        print("  " + line)
    return 0


def _run(args: argparse.Namespace) -> int:
    _runner(args).run()
    return 0


def _refresh(args: argparse.Namespace) -> int:
    _runner(args).run(show_plan=True, dry_run=args.dry_run)
    return 0


def _rescore(args: argparse.Namespace) -> int:
    _runner(args).rescore()
    return 0


def _dedup(args: argparse.Namespace) -> int:
    _runner(args).dedup()
    return 0


def _sql(args: argparse.Namespace) -> int:
    from seir.engine.query import run_sql, write_rows

    columns, rows = run_sql(args.out, args.query)
    write_rows(columns, rows, args.format, args.output)
    return 0


def _view(args: argparse.Namespace) -> int:
    from seir.engine.view import serve

    serve(args.out, args.host, args.port, args.token, args.annotator)
    return 0


def _import_verdicts(args: argparse.Namespace) -> int:
    import getpass

    from seir.engine.store import ProvenanceStore, VerdictInbox
    from seir.engine.store.verdict_files import read_verdict_file

    read = read_verdict_file(args.file, args.annotator or getpass.getuser())
    with ProvenanceStore(args.out) as store:
        resolved = store.resolve_verdicts(read)  # every line checked before any is stored
        stored = store.record_verdicts(resolved)
        waiting = VerdictInbox(args.out).fold(store)
    print(f"[seir] {stored} new verdicts from {args.file} ({len(resolved) - stored} already there)"
          + (f", and {waiting} a viewer left waiting" if waiting else "") + "; they decide acceptance where the job "
          "sets scoring.human (then run `seir rescore`)", file=sys.stderr)
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from seir.engine.query import format_lineage, lineage, lineage_json

    tree = lineage(args.out, args.dialogue)
    print(lineage_json(tree) if args.json else format_lineage(tree))
    return 0


def _versions(args: argparse.Namespace) -> int:
    from seir.engine.query import format_table, versions

    print(format_table(*versions(args.out)))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from seir.engine.query import diff, format_diff, parse_version

    before, after = parse_version(args.before), parse_version(args.after)
    found = diff(args.out, before, after)
    print(json.dumps(found, indent=1) if args.json else format_diff(found, before, after))
    if args.report is not None:
        from seir.engine.export import write_diff_report
        from seir.engine.store import open_read_only

        con = open_read_only(args.out)
        try:
            print(write_diff_report(con, args.out, before, after, found, args.report))
        finally:
            con.close()
    return 0


def _report(args: argparse.Namespace) -> int:
    from seir.engine.export import write_report
    from seir.engine.store import open_read_only

    con = open_read_only(args.out)
    try:
        print(write_report(con, args.out, args.version))
    finally:
        con.close()
    return 0


def _export(args: argparse.Namespace) -> int:
    from seir.engine.export import ExportOptions, export, parse_splits
    from seir.engine.query import parse_version

    stages = tuple(s.strip() for s in args.stages.split(",")) if args.stages else None
    options = ExportOptions(args.format, parse_version(args.version) if args.version else None,
                            parse_splits(args.split), args.parquet, stages, args.min_margin, args.pairs_per_turn,
                            args.pairs, args.shard_mb)
    export(args.out, args.to, options)
    return 0


def _judge_eval(args: argparse.Namespace) -> int:
    _runner(args).judge_eval(args.data, args.rubric, args.limit)
    return 0


def _check(args: argparse.Namespace) -> int:
    from seir.engine.store.check import check_output

    print(f"[seir] checking {args.out}", file=sys.stderr, flush=True)
    report = check_output(args.out, args.cache, sys.stderr)
    print(report.text())
    return 1 if report.problem_count else 0


def _backup(args: argparse.Namespace) -> int:
    from seir.engine.store import version_name
    from seir.engine.store.snapshots import take_snapshot

    snapshot = take_snapshot(args.out, args.to)
    latest = version_name(snapshot.version) if snapshot.version else "no version yet"
    print(f"[seir] backed up {args.out}'s store (latest: {latest}) to {snapshot.folder}: "
          f"{snapshot.bytes / 2**20:.1f} MiB in {snapshot.seconds:.1f} s; `seir restore --out {args.out} --from "
          f"{snapshot.folder}` brings it back", file=sys.stderr)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from seir.engine.store.snapshots import restore_snapshot

    for line in restore_snapshot(args.out, args.source):
        print(f"[seir] {line}", file=sys.stderr)
    print(f"[seir] the next command that writes reads the restored store whole first; `seir check --out {args.out}` "
          "verifies the output now", file=sys.stderr)
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from seir.operators.backends.tiny import ALL_NAMES, build_tiny_models

    for name in ALL_NAMES:  # one at a time, each line as it lands: the families take a minute in all
        print(f"{name}: {build_tiny_models(args.dir, [name])[name]}", flush=True)
    return 0


def _job_command(commands: argparse._SubParsersAction, name: str, help_text: str,
                 handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text, description=help_text)
    command.add_argument("job", type=Path, help="job spec (YAML)")
    command.add_argument("--out", type=Path, required=True, help="output folder (dataset, images, provenance.duckdb)")
    command.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                         help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    command.add_argument("--cache", type=Path, default=None,
                         help="a call cache shared with other outputs: calls any of them answered are not made again "
                              "(default: the job's execution.cache, else none)")
    _add_verbose(command)
    command.set_defaults(handler=handler)
    return command


def _out_command(commands: argparse._SubParsersAction, name: str, help_text: str,
                 handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text, description=help_text)
    command.add_argument("--out", type=Path, required=True, help="output folder of a seir run")
    _add_verbose(command)
    command.set_defaults(handler=handler)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seir", description=__doc__)
    parser.add_argument("--version", action="version", version=f"seir {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a job spec against what its operators need, loading "
                                   "no model weights and starting no Ray", description="check a job spec: keys, "
                                   "types, the roles and inputs its scorers and dedup methods declare, and each chat "
                                   "role's context window against the job's longest requests (read from the "
                                   "models' configs and tokenizers)")
    validate.add_argument("job", type=Path, help="job spec (YAML)")
    validate.set_defaults(handler=_validate)
    _add_budget(_job_command(commands, "run", "run a job: make every dialogue its seeds call for that is not made yet",
                             _run))
    refresh = _job_command(commands, "refresh", "print what changed since the last run, then make only that",
                           _refresh)
    _add_budget(refresh)
    refresh.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    _job_command(commands, "rescore", "score existing dialogues again with the job's judge and thresholds, "
                 "regenerating nothing", _rescore)
    _job_command(commands, "dedup", "run the dedup pass over the latest version, writing a new version", _dedup)

    sql = _out_command(commands, "sql", "run a read-only SQL query on the provenance store", _sql)
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    sql.add_argument("--output", type=Path, default=None, help="write to FILE instead of standard output")
    lineage = _out_command(commands, "lineage", "print where a dialogue came from: seed, drafts, scores, calls",
                           _lineage)
    lineage.add_argument("dialogue", help="dialogue id or content key")
    lineage.add_argument("--json", action="store_true")
    _out_command(commands, "versions", "list the dataset versions of an output", _versions)
    view = _out_command(commands, "view", "browse an output's dialogues in a local web app, record verdicts and see "
                        "the judge's agreement with them (works while a run writes)", _view)
    view.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs the "
                      "token)")
    view.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    view.add_argument("--token", default=os.environ.get("SEIR_VIEW_TOKEN") or None,
                      help="the token requests must carry (default: $SEIR_VIEW_TOKEN, else one is made and printed "
                           "when the host is not 127.0.0.1)")
    view.add_argument("--annotator", default=None, help="the name verdicts are recorded under (default: your login)")
    verdicts = commands.add_parser("verdicts", help="people's verdicts on an output's dialogues")
    verdict_commands = verdicts.add_subparsers(dest="verdicts_command", required=True)
    imported = _out_command(verdict_commands, "import", "store verdicts from a JSON-lines file or a Label Studio "
                            "JSON export (docs/viewer.md)", _import_verdicts)
    imported.add_argument("file", type=Path)
    imported.add_argument("--annotator", default=None, help="who gave verdicts that do not say (default: your login)")
    diff = _out_command(commands, "diff", "what changed between two dataset versions", _diff)
    diff.add_argument("before", help="version number or name (1 or v0001)")
    diff.add_argument("after")
    diff.add_argument("--json", action="store_true")
    diff.add_argument("--report", type=Path, default=None, help="also write an HTML page: both versions on the same "
                      "plots, what changed and why")

    report = _out_command(commands, "report", "write a dataset version's report.html (plots and a gallery; "
                          "opens offline)", _report)
    report.add_argument("--version", type=int, default=None, help="version number (default: the latest)")

    export = _out_command(commands, "export", "write a dataset version in a format trainers read (Hugging Face, "
                          "TRL SFT/DPO, LLaVA, ShareGPT), with a dataset card and a manifest of hashes", _export)
    export.add_argument("--format", required=True,
                        choices=("hf", "trl-sft", "trl-dpo", "llava", "sharegpt", "sharegpt-dpo"))
    export.add_argument("--to", type=Path, required=True, help="a new folder to write the export into")
    export.add_argument("--version", default=None, help="dataset version (1 or v0001; default: the latest)")
    export.add_argument("--split", default="train=1", help="splits by a hash of the dialogue id, e.g. "
                        "train=0.95,test=0.05 (default: train=1)")
    export.add_argument("--parquet", action="store_true", help="hf, trl-*: the Hub's Parquet layout "
                        "(data/SPLIT-*.parquet, load_dataset) instead of save_to_disk's (load_from_disk)")
    export.add_argument("--stages", default=None, help="pair formats: stages to take pairs from, e.g. "
                        "question,answer (default: all the format can hold)")
    export.add_argument("--min-margin", type=float, default=0.0,
                        help="pair formats: how much higher the kept draft must score (0-5 scale; default 0)")
    export.add_argument("--pairs-per-turn", type=int, default=None,
                        help="pair formats: at most K pairs per turn, the widest margins first (default: all)")
    export.add_argument("--shard-mb", type=int, default=500, help="largest shard of hf and trl-* exports in MB")
    export.add_argument("--pairs", default="both",
                        help="pair formats: sibling pairs (two candidates of one round, seir.candidates), refinement "
                             "pairs (the kept draft against an earlier round's), both (default), human (drafts people "
                             "preferred, from `seir view` or `seir verdicts import`) or all three")

    check = _out_command(commands, "check", "verify an output: every table read whole, every image hashing to its "
                         "key, every version's files matching its manifest, call caches and snapshots; exits 1 on "
                         "any problem, naming each", _check)
    check.add_argument("--cache", type=Path, action="append", default=[], help="also check this shared call cache "
                       "(the caches the output's runs named in execution.cache are checked anyway)")
    backup = _out_command(commands, "backup", "copy the output's provenance store to a new folder, consistently "
                          "(a running seir waits for the copy at its next commit)", _backup)
    backup.add_argument("--to", type=Path, required=True, help="a new folder for the copy")
    restore = _out_command(commands, "restore", "bring back a store from a backup or snapshot folder; the store "
                           "it replaces is kept beside it, and versions written after the snapshot are moved aside",
                           _restore)
    restore.add_argument("--from", dest="source", type=Path, required=True,
                         help="a folder `seir backup` wrote, or one of OUT/snapshots/")

    judge_eval = commands.add_parser(
        "judge-eval", help="agreement of the job's judge with human scores (InterMT's file, or seir's JSONL format)")
    judge_eval.add_argument("data", type=Path, help="InterMT score_evaluation JSON, or JSONL (see docs)")
    judge_eval.add_argument("--rubric", choices=("intermt", "synjudge"), default="intermt")
    judge_eval.add_argument("--job", type=Path, default=Path("jobs/demo.yaml"), help="job whose judge role to use")
    judge_eval.add_argument("--out", type=Path, default=Path("runs/judge-eval"),
                            help="output folder: the report and the run's provenance")
    judge_eval.add_argument("--limit", type=int, default=None, help="the first N items only")
    judge_eval.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None)
    _add_verbose(judge_eval)
    judge_eval.set_defaults(handler=_judge_eval)

    models = commands.add_parser("models", help="model utilities").add_subparsers(dest="models", required=True)
    build = models.add_parser("build-tiny", help="build the offline random-weight tiny models into DIR")
    build.add_argument("dir", type=Path)
    build.set_defaults(handler=_build_tiny)
    from seir.engine.cli.cluster import add_commands
    add_commands(commands)
    from seir.engine.cli.seeds import add_commands as add_seed_commands
    add_seed_commands(commands)
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
    except Exception as err:
        message = _user_message(err, args)
        if message is None or os.environ.get("SEIR_DEBUG"):
            raise
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"seir: error: {message}", file=sys.stderr)
        return 2


def _user_message(err: Exception, args: argparse.Namespace) -> str | None:
    """The one line an error a user can act on gets (None: a bug, shown with its traceback). A full disk, a damaged
    store or DuckDB out of its memory cap can surface anywhere as a library's own error, so those are recognised here
    too."""
    from seir.engine.errors import disk_full, is_disk_full, is_out_of_memory
    from seir.engine.progress import failed_step
    from seir.engine.store import damaged, is_damage, memory_cap

    if isinstance(err, _USER_ERRORS):
        return str(err)
    if is_out_of_memory(err):
        step = failed_step(err)
        return (f"DuckDB ran out of its {memory_cap()} of working memory{f' in {step!r}' if step else ''}: raise "
                "$SEIR_DUCKDB_MEMORY (e.g. SEIR_DUCKDB_MEMORY=2GB) and run the same command again")
    folder = getattr(args, "to", None) or getattr(args, "out", None) or Path.cwd()
    if is_disk_full(err):
        return str(disk_full(folder, "its files"))
    if is_damage(err) and getattr(args, "out", None) is not None:
        return str(damaged(args.out / "provenance.duckdb", str(err).splitlines()[0]))
    return None
