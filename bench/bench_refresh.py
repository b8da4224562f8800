"""Refresh benchmarks: what a refresh computes against the ideal, and its wall time against a full run.

A job like the demo (tiny models, InterSyn's topics and templates) runs over N seeds into a fresh output. Then each
change refreshes a private copy of that output:

- ``seeds``: 1% more seeds (the reference is a run of only the new seeds, whose calls it must equal);
- ``image-model``: the image role swapped for another model (the tiny Stable Diffusion with perturbed weights);
- ``judge-model``: the judge swapped the same way;
- ``prompt-comment``: the prompts module edited (a comment and blank lines) so that it renders the same prompts.

For the three changes the ideal is counted independently: a fresh run with the new config into another folder, and
the set difference of its call keys and the first run's. Wall times exclude starting Ray and the model pools.

    python bench/bench_refresh.py --seeds 24

Targets: computed calls == ideal for every change; wall time of a refresh well under a full run's where little
changed (adding 1% of seeds: under 5%).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import duckdb
import ray
import torch
from safetensors.torch import load_file, save_file

from seir.engine.run import Runner, loop, planning
from seir.engine.spec import JobSpec, load_job
from seir.operators.backends.tiny import resolve_model_ref
from seir.operators.stages import prompts

REPO = Path(__file__).resolve().parents[1]


def keys(out: Path, computed_only: bool) -> set[str]:
    """Call keys of the output's latest run."""
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        return {row[0] for row in con.execute(
            f"""SELECT call_key FROM model_calls WHERE {'NOT cached AND' if computed_only else ''} run_id =
                (SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1)""").fetchall()}


def with_topics(spec: JobSpec, start: int, stop: int) -> JobSpec:
    topics = json.loads((REPO / "jobs" / "data" / "intersyn" / "topics.json").read_text())[start:stop]
    return spec.model_copy(update={"seeds": spec.seeds.model_copy(
        update={"topics": topics, "topics_file": None, "limit": None})})


def run(spec: JobSpec, out: Path) -> float:
    summary = Runner(spec, out, stream=io.StringIO()).run()
    return summary["wall_s"] - summary.get("startup_s", 0.0)


def perturbed_copy(model_ref: str, target: Path) -> str:
    """Another model of the same architecture: every weight file with a little noise (a fine-tuned variant)."""
    shutil.copytree(resolve_model_ref(model_ref), target)
    generator = torch.Generator().manual_seed(7)
    for weights in target.rglob("*.safetensors"):
        tensors = load_file(weights)
        save_file({name: t + 0.01 * torch.randn(t.shape, generator=generator, dtype=t.dtype)
                   if t.is_floating_point() else t for name, t in tensors.items()}, weights)
    return str(target)


def swap_model(spec: JobSpec, role: str, folder: Path) -> JobSpec:
    current = spec.roles[role]
    swapped = current.model_copy(update={"model": perturbed_copy(current.model, folder / f"{role}-variant")})
    return spec.model_copy(update={"roles": {**spec.roles, role: swapped}})


@contextmanager
def prompts_from_edited_source(folder: Path) -> Iterator[None]:
    """The loop and the planner use a copy of the prompts module with a comment and blank lines added."""
    edited = folder / "edited_prompts.py"
    edited.write_text("# Reworded comments, same prompts.\n\n" + inspect.getsource(prompts))
    spec = importlib.util.spec_from_file_location("edited_prompts", edited)
    module = importlib.util.module_from_spec(spec)
    sys.modules["edited_prompts"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    names = ("question_messages", "answer_messages", "caption_messages")
    saved = planning.prompts, {name: getattr(loop, name) for name in names}
    planning.prompts = module
    for name in names:
        setattr(loop, name, getattr(module, name))
    try:
        yield
    finally:
        planning.prompts = saved[0]
        for name, function in saved[1].items():
            setattr(loop, name, function)


def measure(name: str, base_out: Path, folder: Path, changed: JobSpec, full_s: float,
            context: Callable[[], AbstractContextManager[None]] | None = None) -> dict[str, object]:
    out = Path(shutil.copytree(base_out, folder / f"{name}-out"))
    first = keys(base_out, computed_only=False)
    with context() if context else nullcontext():
        refresh_s = run(changed, out)
        computed = keys(out, computed_only=True)
        fresh_s = run(changed, folder / f"{name}-fresh")
    ideal = keys(folder / f"{name}-fresh", computed_only=False) - first
    return {"change": name, "computed": len(computed), "ideal": len(ideal), "equal": computed == ideal,
            "refresh_s": refresh_s, "fresh_s": fresh_s, "full_s": full_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, default=REPO / "jobs" / "demo.yaml")
    parser.add_argument("--seeds", type=int, default=24)
    args = parser.parse_args()
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    base = load_job(args.job)
    rows = []
    with tempfile.TemporaryDirectory(prefix="seir-bench-refresh-") as tmp:
        folder = Path(tmp)
        spec = with_topics(base, 0, args.seeds)
        full_s = run(spec, folder / "base")
        added = max(1, args.seeds // 100)
        grown_out = Path(shutil.copytree(folder / "base", folder / "seeds-out"))
        grown_s = run(with_topics(base, 0, args.seeds + added), grown_out)
        grown = keys(grown_out, computed_only=True)
        run(with_topics(base, args.seeds, args.seeds + added), folder / "seeds-reference")
        reference = keys(folder / "seeds-reference", computed_only=False)
        rows.append({"change": f"seeds +{added}", "computed": len(grown), "ideal": len(reference),
                     "equal": grown == reference, "refresh_s": grown_s, "fresh_s": float("nan"), "full_s": full_s})
        rows.append(measure("image-model", folder / "base", folder, swap_model(spec, "image", folder), full_s))
        rows.append(measure("judge-model", folder / "base", folder, swap_model(spec, "judge", folder), full_s))
        rows.append(measure("prompt-comment", folder / "base", folder, spec, full_s,
                            lambda: prompts_from_edited_source(folder)))
    ray.shutdown()
    print(f"full run: {args.seeds} seeds, {full_s:.1f} s (pools started)")
    print("| change | calls computed | ideal | computed / ideal | same keys | refresh s | refresh / full run |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for row in rows:
        ratio = row["computed"] / row["ideal"] if row["ideal"] else (1.0 if row["computed"] == 0 else float("inf"))
        print(f"| {row['change']} | {row['computed']} | {row['ideal']} | {ratio:.3f} | {row['equal']} | "
              f"{row['refresh_s']:.1f} | {row['refresh_s'] / row['full_s']:.3f} |")


if __name__ == "__main__":
    main()
