"""Judge evaluation: how far the judge's scores agree with human scores. Pure Python; the CLI and provenance wrap it.

Data
----
``read_intermt``: InterMT-Bench's scoring file, a JSON list of dialogues. In each, ``conversations[i]`` with
``round`` 0 holds the dialogue-level annotations; rounds >= 1 hold ``round_conversations`` (prompt, response,
response_images, ...) and per-turn ``annotations`` (0-3; ``reason_*`` texts are ignored). Every round becomes a turn
item (history: the earlier rounds) and every dialogue a dialogue item. The file ships no images: a response image
not found at its relative path beside the file is *unavailable*, and dimensions that need it are reported as not
evaluable rather than guessed. User-side ``prompt_images`` are not shown to the judge.

``read_jsonl``: our own format, one JSON object per line (blank lines skipped)::

    {"id": "t1", "question": "...", "answer": "...", "caption": "...", "image": "img/t1.png",
     "history": [["earlier question", "earlier answer"]], "scores": {"text_content": 4}, "group": "prompt-7"}
    {"id": "d1", "turns": [{"question": "...", "answer": "...", "image": "img/d1-1.png"}], "scores": {"helpfulness": 2}}
    {"preference": {"chosen": "t1", "rejected": "t2", "dimension": "text_content"}}

A line with "question" is a turn, with "turns" a dialogue, with "preference" a pair (without "dimension" it holds
for every dimension both items were scored on). "answer", "caption", "image", "history" and "group" are optional;
image paths are relative to the file, and "image": null means the turn has no picture (scored 0 on picture
dimensions, as SynJudge does). Scores must be numbers on the dimension's scale.

Metrics per dimension, on the dimension's own scale
----------------------------------------------------
Pearson and Spearman (ties get average ranks), exact and within-one agreement of the model's expectation rounded
half-up to a level, and pair accuracy: over pairs of items in the same ``group`` whose human scores differ, and
explicit preferences, the share the judge orders like the humans (a model tie counts half). InterMT has one
response per prompt, so its groups are the turns of one dialogue (same topic, annotator and picture style) and all
dialogues together.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seir.operators.jsonlines import object_lines
from seir.operators.scoring.judge import JudgeScorer
from seir.operators.scoring.measures import pearson, spearman
from seir.operators.scoring.rubrics import (
    DIMENSIONS,
    INTERMT_DIALOGUE,
    INTERMT_TURN,
    RUBRICS,
    DialogueView,
    Dimension,
    TurnView,
    View,
)


class EvalDataError(ValueError):
    """Unusable evaluation data; the message names the file, the line or item, and the field."""


@dataclass
class EvalItem:
    item_id: str
    view: View
    human: dict[str, float]  # dimension -> human score on its scale
    group: str | None = None  # items of one group are compared pairwise
    unavailable: frozenset[str] = frozenset()  # inputs the original had but this data lacks (InterMT's images)


@dataclass(frozen=True)
class Preference:
    chosen: str
    rejected: str
    dimension: str | None = None  # None: every dimension both items were scored on


@dataclass
class EvalSet:
    source: str
    items: list[EvalItem]
    preferences: list[Preference] = field(default_factory=list)


# --- readers --------------------------------------------------------------------------------------------------


def read_eval_data(path: str | Path) -> EvalSet:
    """``.jsonl`` in our format, anything else as InterMT-Bench JSON."""
    return read_jsonl(path) if Path(path).suffix == ".jsonl" else read_intermt(path)


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, prefix: str = "",
         required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise EvalDataError(f"{where}: field {prefix}{key!r} is missing")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise EvalDataError(f"{where}: field {prefix}{key!r} should be {names}, got {type(value).__name__}")
    return value


def _scores(obj: Mapping[str, Any], known: Mapping[str, Dimension], where: str, prefix: str,
            strict: bool) -> dict[str, float]:
    scores = {}
    for name, value in obj.items():
        if name not in known:
            if strict:
                raise EvalDataError(f"{where}: field {prefix}{name!r} is not a known dimension; known: "
                                    f"{', '.join(known)}")
            continue
        low, high = known[name].scale
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise EvalDataError(f"{where}: field {prefix}{name!r} should be a number in {low}-{high}, got {value!r}")
        scores[name] = float(value)
    return scores


def read_intermt(path: str | Path) -> EvalSet:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvalDataError(f"{path}: cannot read InterMT JSON: {err}") from None
    if not isinstance(data, list):
        raise EvalDataError(f"{path}: expected a JSON list of dialogues, got {type(data).__name__}")
    items: list[EvalItem] = []
    for index, entry in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(entry, dict):
            raise EvalDataError(f"{where}: expected an object, got {type(entry).__name__}")
        rounds = _get(entry, "conversations", list, where)
        turns: list[TurnView] = []
        dialogue_scores: dict[str, float] = {}
        lacking: set[str] = set()
        for j, round_ in enumerate(rounds):
            prefix = f"conversations[{j}]."
            if not isinstance(round_, dict):
                raise EvalDataError(f"{where}: field conversations[{j}] should be an object")
            number = _get(round_, "round", int, where, prefix)
            annotations = _get(round_, "annotations", dict, where, prefix)
            if number == 0:
                dialogue_scores = _scores(annotations, INTERMT_DIALOGUE, where, f"{prefix}annotations.", False)
                continue
            conv = _get(round_, "round_conversations", dict, where, prefix)
            inner = f"{prefix}round_conversations."
            image_paths = _get(conv, "response_images", list, where, inner, required=False) or []
            image = _first_image(path.parent, image_paths)
            unavailable = frozenset({"image"}) if image_paths and image is None else frozenset()
            lacking |= unavailable
            view = TurnView(_get(conv, "prompt", str, where, inner), _get(conv, "response", str, where, inner),
                            image=image, history=[(t.question, t.answer or "") for t in turns])
            turns.append(view)
            scores = _scores(annotations, INTERMT_TURN, where, f"{prefix}annotations.", False)
            items.append(EvalItem(f"{index}/{number}", view, scores, f"dialogue {index}", unavailable))
        items.append(EvalItem(str(index), DialogueView(turns), dialogue_scores, "dialogues", frozenset(lacking)))
    return EvalSet(str(path), items)


def _first_image(base: Path, paths: list[Any]) -> bytes | None:
    candidate = base / str(paths[0]) if paths else None
    return candidate.read_bytes() if candidate is not None and candidate.is_file() else None


def read_jsonl(path: str | Path) -> EvalSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EvalDataError(f"{path}: cannot read: {err}") from None
    items: list[EvalItem] = []
    preferences: list[tuple[str, Preference]] = []
    for where, obj in object_lines(path, text, EvalDataError):
        if "preference" in obj:
            pref = _get(obj, "preference", dict, where)
            dimension = _get(pref, "dimension", str, where, "preference.", required=False)
            if dimension is not None and dimension not in DIMENSIONS:
                raise EvalDataError(f"{where}: field 'preference.dimension' names unknown dimension {dimension!r}")
            chosen, rejected = (_get(pref, k, str, where, "preference.") for k in ("chosen", "rejected"))
            preferences.append((where, Preference(chosen, rejected, dimension)))
            continue
        if "turns" in obj:
            turns = _get(obj, "turns", list, where)
            view: View = DialogueView([_jsonl_turn(t, path.parent, where, f"turns[{k}].") for k, t in enumerate(turns)])
        elif "question" in obj:
            view = _jsonl_turn(obj, path.parent, where, "")
        else:
            raise EvalDataError(f"{where}: a line holds a turn ('question'), a dialogue ('turns') or a 'preference'")
        scores = _scores(_get(obj, "scores", dict, where), DIMENSIONS, where, "scores.", True)
        group = _get(obj, "group", str, where, required=False)
        items.append(EvalItem(_get(obj, "id", str, where), view, scores, group))
    ids = [item.item_id for item in items]
    if len(set(ids)) != len(ids):
        raise EvalDataError(f"{path}: ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    for where, pref in preferences:
        for key in ("chosen", "rejected"):
            if getattr(pref, key) not in ids:
                raise EvalDataError(f"{where}: field 'preference.{key}' names no item: {getattr(pref, key)!r}")
    return EvalSet(str(path), items, [pref for _, pref in preferences])


def _jsonl_turn(obj: Any, base: Path, where: str, prefix: str) -> TurnView:
    if not isinstance(obj, dict):
        raise EvalDataError(f"{where}: field {prefix.rstrip('.')!r} should be an object")
    history = _get(obj, "history", list, where, prefix, required=False) or []
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in history):
        raise EvalDataError(f"{where}: field {prefix}'history' should be a list of [question, answer] pairs")
    image_path = _get(obj, "image", str, where, prefix, required=False)
    image = None
    if image_path is not None:
        try:
            image = (base / image_path).read_bytes()
        except OSError as err:
            raise EvalDataError(f"{where}: field {prefix}'image': cannot read {image_path!r}: {err.strerror}") from None
    return TurnView(_get(obj, "question", str, where, prefix), _get(obj, "answer", str, where, prefix, required=False),
                    _get(obj, "caption", str, where, prefix, required=False), image, [tuple(p) for p in history])


# --- metrics --------------------------------------------------------------------------------------------------


def agreement(human: Sequence[float], model: Sequence[float], scale: tuple[int, int]) -> tuple[float, float]:
    """(exact, within-one) agreement after rounding the model's expectations half-up onto the scale's levels."""
    levels = np.clip(np.floor(np.asarray(model, dtype=np.float64) + 0.5), *scale)
    gaps = np.abs(levels - np.asarray(human, dtype=np.float64))
    return float(np.mean(gaps < 0.5)), float(np.mean(gaps < 1.5))


def pair_accuracy(human: Sequence[float], model: Sequence[float], groups: Sequence[str | None]) -> tuple[int, float]:
    """(pairs, credit) over pairs within a group whose human scores differ; credit 1 when the model orders them
    the same way, 0.5 on a model tie. Items without a group are not paired."""
    h, m = np.asarray(human, dtype=np.float64), np.asarray(model, dtype=np.float64)
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        if group is not None:
            members[group].append(index)
    pairs, credit = 0, 0.0
    for indices in members.values():
        gh, gm = h[indices], m[indices]
        for i in range(len(indices) - 1):  # row by row: memory stays linear in the group's size
            dh, dm = gh[i + 1 :] - gh[i], gm[i + 1 :] - gm[i]
            differ = dh != 0
            pairs += int(differ.sum())
            credit += float((np.sign(dh[differ]) == np.sign(dm[differ])).sum() + 0.5 * (dm[differ] == 0).sum())
    return pairs, credit


# --- the report -----------------------------------------------------------------------------------------------


@dataclass
class DimensionReport:
    name: str
    title: str
    scale: tuple[int, int]
    level: str  # "turn" or "dialogue"
    evaluable: bool
    reason: str = ""  # why not evaluable
    n: int = 0
    skipped: int = 0  # items with a human score that lack an input the dimension needs
    pearson: float | None = None
    spearman: float | None = None
    exact: float | None = None
    within_one: float | None = None
    pairs: int = 0
    pair_accuracy: float | None = None
    label_mass: float | None = None  # mean probability the judge put on score labels
    human_mean: float | None = None
    model_mean: float | None = None


@dataclass
class Prediction:
    item_id: str
    dimension: str
    human: float
    model: float  # the judge's expectation on the dimension's scale
    label_mass: float | None


@dataclass
class JudgeEvalReport:
    source: str
    rubric: str
    judge: dict[str, Any]
    n_items: int
    dimensions: list[DimensionReport]
    predictions: list[Prediction]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_text(self) -> str:
        header = (f"{'dimension':<31} {'level':<9} {'scale':<5} {'n':>5} {'pearson':>8} {'spearman':>8} "
                  f"{'exact':>6} {'within1':>7} {'pairs':>6} {'pair_acc':>8} {'mass':>5}")
        lines = [f"Judge evaluation of {self.source} on rubric {self.rubric} ({self.n_items} items)", header]
        for d in self.dimensions:
            start = f"{d.name:<31} {d.level:<9} {d.scale[0]}-{d.scale[1]:<3}"
            if not d.evaluable:
                lines.append(f"{start} {'-':>5} not evaluable: {d.reason}")
                continue
            lines.append(f"{start} {d.n:>5} {_num(d.pearson):>8} {_num(d.spearman):>8} {_pct(d.exact):>6} "
                         f"{_pct(d.within_one):>7} {d.pairs:>6} {_pct(d.pair_accuracy):>8} {_num(d.label_mass, 2):>5}")
        return "\n".join(lines)


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


# --- evaluation -----------------------------------------------------------------------------------------------


def _rubric(rubric: str | Mapping[str, Dimension]) -> tuple[str, dict[str, Dimension]]:
    if isinstance(rubric, str) and rubric not in RUBRICS:
        raise ValueError(f"unknown rubric {rubric!r}; known: {', '.join(RUBRICS)}")
    return (rubric, RUBRICS[rubric]) if isinstance(rubric, str) else ("custom", dict(rubric))


def _plan(data: EvalSet, dims: Mapping[str, Dimension]) -> tuple[dict[tuple[str, ...], list[EvalItem]],
                                                                  dict[str, list[frozenset[str]]]]:
    """Items grouped by the dimensions to score them on, and per dimension what each skipped item lacked."""
    plan: dict[tuple[str, ...], list[EvalItem]] = defaultdict(list)
    lacking: dict[str, list[frozenset[str]]] = defaultdict(list)
    for item in data.items:
        names = []
        for name, d in dims.items():
            if name in item.human and d.per_dialogue == isinstance(item.view, DialogueView):
                if d.needs & item.unavailable:
                    lacking[name].append(d.needs & item.unavailable)
                else:
                    names.append(name)
        if names:
            plan[tuple(names)].append(item)
    return plan, lacking


def judged_items(data: EvalSet, rubric: str | Mapping[str, Dimension] = "intermt") -> int:
    """How many items ``evaluate`` sends to the judge (the others lack what every dimension needs)."""
    return sum(len(members) for members in _plan(data, _rubric(rubric)[1])[0].values())


def evaluate(items: EvalSet | Sequence[EvalItem], judge_scorer: JudgeScorer,
             rubric: str | Mapping[str, Dimension] = "intermt", batch_size: int = 16,
             on_batch: Callable[[int], object] | None = None) -> JudgeEvalReport:
    """Score every item on every rubric dimension it has a human score for (and the inputs to judge), then
    compare. Dimensions no item can be judged on are reported as not evaluable, with the reason. ``on_batch`` is
    told how many items each judged batch held."""
    data = items if isinstance(items, EvalSet) else EvalSet("(items)", list(items))
    rubric_name, dims = _rubric(rubric)
    plan, lacking = _plan(data, dims)
    model: dict[tuple[str, str], tuple[float, float | None]] = {}
    for names, members in plan.items():
        for start in range(0, len(members), batch_size):
            batch = members[start : start + batch_size]
            for item, result in zip(batch, judge_scorer.score_turns([i.view for i in batch], names), strict=True):
                for name in names:
                    model[(item.item_id, name)] = (result.raw[name], result.raw.get(f"{name}.label_mass"))
            if on_batch is not None:
                on_batch(len(batch))
    predictions = [Prediction(i.item_id, n, i.human[n], *model[(i.item_id, n)])
                   for i in data.items for n in dims if (i.item_id, n) in model]
    reports = [_dimension_report(d, predictions, data, lacking[name]) for name, d in dims.items()]
    return JudgeEvalReport(data.source, rubric_name, judge_scorer.config(), len(data.items), reports, predictions)


def _dimension_report(d: Dimension, predictions: list[Prediction], data: EvalSet,
                      lacking: list[frozenset[str]]) -> DimensionReport:
    base = DimensionReport(d.name, d.title, d.scale, "dialogue" if d.per_dialogue else "turn", evaluable=False,
                           skipped=len(lacking))
    mine = [p for p in predictions if p.dimension == d.name]
    if not mine:
        missing = ", ".join(sorted(frozenset().union(*lacking)))
        base.reason = (f"needs {missing}, which {len(lacking)} item(s) lack in this data" if lacking
                       else "no human scores for it in this data")
        return base
    human, model = [p.human for p in mine], [p.model for p in mine]
    groups = {i.item_id: i.group for i in data.items}
    pairs, credit = pair_accuracy(human, model, [groups[p.item_id] for p in mine])
    by_item = {p.item_id: p.model for p in mine}
    for pref in data.preferences:
        if pref.dimension in (None, d.name) and pref.chosen in by_item and pref.rejected in by_item:
            gap = by_item[pref.chosen] - by_item[pref.rejected]
            pairs, credit = pairs + 1, credit + (1.0 if gap > 0 else 0.5 if gap == 0 else 0.0)
    exact, within = agreement(human, model, d.scale)
    masses = [p.label_mass for p in mine if p.label_mass is not None]
    return dataclasses.replace(
        base, evaluable=True, n=len(mine), pearson=pearson(human, model), spearman=spearman(human, model),
        exact=exact, within_one=within, pairs=pairs, pair_accuracy=credit / pairs if pairs else None,
        label_mass=math.fsum(masses) / len(masses) if masses else None,
        human_mean=math.fsum(human) / len(human), model_mean=math.fsum(model) / len(model))
