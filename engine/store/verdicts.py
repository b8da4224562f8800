"""People's verdicts on what a run made: a score on a dimension, accept or reject of a turn or a dialogue, or one of
two candidates preferred; kept in ``human_verdicts`` with who gave them and when.

A verdict is written to the output's inbox first (``verdicts/inbox/KEY.json``, fsynced, renamed into place): that
needs no lock, so a verdict given while a run commits, from two viewers at once, or just before a kill -9 is never
lost. Folding the inbox into the store (``VerdictInbox.fold``) waits for the file like any writer and is idempotent
(a verdict's key is its content), so whoever folds next (the viewer, ``seir verdicts import``, ``seir rescore``)
finishes what a killed one began.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from seir.engine.errors import SeirError
from seir.engine.keys import content_key
from seir.engine.records import TURN_DIMENSIONS
from seir.engine.store.base import StoreBase, held

VERDICTS = ("accept", "reject")


class VerdictError(SeirError):
    pass


@dataclass(frozen=True)
class HumanVerdict:
    dialogue_id: str
    turn_index: int | None = None  # from 0; None: the whole dialogue
    dimension: str | None = None  # with ``score``
    score: float | None = None  # 0-5
    verdict: str | None = None  # "accept" or "reject"
    stage: str | None = None
    draft_key: str | None = None  # the draft judged, where one was
    prefer: str | None = None  # a draft preferred...
    other: str | None = None  # ...over this one (None: over every other candidate of its round)
    note: str = ""
    annotator: str = ""
    source: str = ""  # "viewer", or the file it was imported from
    created_at: datetime | None = None
    dialogue_key: str | None = None  # the dialogue judged, named when the verdict is recorded

    @property
    def verdict_key(self) -> str:
        """The verdict's content: the same line imported twice is one verdict."""
        fields = dataclasses.asdict(self)
        fields.pop("dialogue_key")
        fields["created_at"] = self.created_at.isoformat() if self.created_at else None
        return content_key(fields)

    def checked(self, where: str) -> HumanVerdict:
        """This verdict, or a VerdictError naming ``where`` and the field that is wrong."""
        if not self.dialogue_id:
            raise VerdictError(f"{where}: field 'dialogue_id': give the dialogue's id")
        if self.turn_index is not None and self.turn_index < 0:
            raise VerdictError(f"{where}: field 'turn': turns count from 1")
        if (self.score is None) != (self.dimension is None):
            raise VerdictError(f"{where}: field '{'dimension' if self.dimension is None else 'score'}': a score "
                               "needs both a dimension and a score")
        if self.dimension is not None and self.dimension not in TURN_DIMENSIONS:
            raise VerdictError(f"{where}: field 'dimension': {self.dimension!r} is not one of "
                               f"{', '.join(TURN_DIMENSIONS)}")
        if self.dimension is not None and self.turn_index is None:
            raise VerdictError(f"{where}: field 'turn': a score is given to a turn; name it (from 1)")
        if self.score is not None and not 0 <= self.score <= 5:
            raise VerdictError(f"{where}: field 'score': {self.score} is outside 0-5")
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise VerdictError(f"{where}: field 'verdict': {self.verdict!r} is not accept or reject")
        if self.score is None and self.verdict is None and self.prefer is None:
            raise VerdictError(f"{where}: a verdict gives a score (with its dimension), a verdict (accept or "
                               "reject) or a preference (prefer: a draft key)")
        return self

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "created_at": self.created_at.isoformat()
                           if self.created_at else None})

    @classmethod
    def from_json(cls, text: str) -> HumanVerdict:
        fields = json.loads(text)
        created = fields.pop("created_at")
        return cls(**fields, created_at=datetime.fromisoformat(created) if created else None)


class Verdicts(StoreBase):
    @held
    def resolve_verdicts(self, verdicts: Sequence[tuple[str, HumanVerdict]]) -> list[HumanVerdict]:
        """Each (where, verdict) with its dialogue named by key (the latest version's dialogue of that id, else the
        newest one made), its turn, stage and drafts checked to be that dialogue's; a VerdictError names ``where``
        and the field that does not fit."""
        ids = sorted({v.dialogue_id for _, v in verdicts if not v.dialogue_key})
        found = {row[0]: row[1:] for row in self.con.execute("""
            SELECT d.dialogue_id, arg_max(d.dialogue_key, (vd.dialogue_key IS NOT NULL, d.created_at)),
                   arg_max(d.n_turns, (vd.dialogue_key IS NOT NULL, d.created_at))
            FROM dialogues d LEFT JOIN (SELECT dialogue_key FROM version_dialogues
                                        WHERE version = (SELECT max(version) FROM versions)) vd USING (dialogue_key)
            WHERE d.dialogue_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY d.dialogue_id""", [ids]).fetchall()}
        # A verdict given on a dialogue's page names the dialogue by key: the one the person saw.
        keyed = {row[0]: row[1:] for row in self.con.execute(
            "SELECT dialogue_key, any_value(dialogue_id), any_value(n_turns) FROM dialogues WHERE dialogue_key IN "
            "(SELECT unnest(?::VARCHAR[])) GROUP BY dialogue_key",
            [sorted({v.dialogue_key for _, v in verdicts if v.dialogue_key})]).fetchall()}
        named = {v.draft_key for _, v in verdicts} | {v.prefer for _, v in verdicts} | {v.other for _, v in verdicts}
        drafts = {row[0]: row[1:] for row in self.con.execute(
            "SELECT draft_key, dialogue_key, turn_index, stage FROM drafts WHERE draft_key IN "
            "(SELECT unnest(?::VARCHAR[]))", [sorted(k for k in named if k)]).fetchall()}
        resolved = []
        for where, verdict in verdicts:
            if verdict.dialogue_key:
                if verdict.dialogue_key not in keyed:
                    raise VerdictError(f"{where}: field 'dialogue_key': no dialogue {verdict.dialogue_key!r} here")
                dialogue_id, turns = keyed[verdict.dialogue_key]
                key, verdict = verdict.dialogue_key, dataclasses.replace(verdict, dialogue_id=dialogue_id)
            elif verdict.dialogue_id not in found:
                raise VerdictError(f"{where}: field 'dialogue_id': no dialogue {verdict.dialogue_id!r} in this "
                                   "output (list them with `seir sql --out DIR \"SELECT dialogue_id FROM "
                                   "dataset_latest\"`)")
            else:
                key, turns = found[verdict.dialogue_id]
            verdict.checked(where)
            if verdict.turn_index is not None and verdict.turn_index >= turns:
                raise VerdictError(f"{where}: field 'turn': dialogue {verdict.dialogue_id} has {turns} turns")
            for field in ("draft_key", "prefer", "other"):
                draft = getattr(verdict, field)
                if draft is None:
                    continue
                owner = drafts.get(draft)
                if owner is None or owner[0] != key:
                    raise VerdictError(f"{where}: field '{field}': {draft!r} is not a draft of dialogue "
                                       f"{verdict.dialogue_id} (its drafts are in `seir lineage`)")
                if verdict.turn_index is not None and owner[1] != verdict.turn_index:
                    raise VerdictError(f"{where}: field '{field}': that draft is of turn {owner[1] + 1}")
            resolved.append(dataclasses.replace(verdict, dialogue_key=key))
        return resolved

    @held
    def record_verdicts(self, verdicts: Sequence[HumanVerdict]) -> int:
        """Store resolved verdicts (one transaction; a verdict already stored is left as it is); returns how many
        were new."""
        before = self.con.execute("SELECT count(*) FROM human_verdicts").fetchall()[0][0]
        rows = [{**dataclasses.asdict(v), "verdict_key": v.verdict_key} for v in verdicts]
        with self.transaction():
            self._insert("human_verdicts", {name: [r[name] for r in rows] for name in rows[0]} if rows else {},
                         on_conflict_ignore=True)
        return self.con.execute("SELECT count(*) FROM human_verdicts").fetchall()[0][0] - before


class VerdictInbox:
    """Verdicts waiting to be stored: one file each, written whole before anyone is told it is saved."""

    FOLDER = Path("verdicts") / "inbox"

    def __init__(self, out_dir: Path) -> None:
        self.folder = Path(out_dir) / self.FOLDER

    def put(self, verdict: HumanVerdict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{verdict.verdict_key}.json"
        temp = target.with_suffix(f".{os.getpid()}.tmp")
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(verdict.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(target)
        _sync_folder(self.folder)
        return target

    def waiting(self) -> list[Path]:
        """The files of the verdicts waiting to be stored."""
        return sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []

    def pending(self) -> list[HumanVerdict]:
        return [HumanVerdict.from_json(path.read_text(encoding="utf-8")) for path in self.waiting()]

    def fold(self, store: Verdicts) -> int:
        """Store every waiting verdict, then take it out of the inbox; returns how many were stored."""
        files = self.waiting()
        if not files:
            return 0
        stored = store.record_verdicts([HumanVerdict.from_json(path.read_text(encoding="utf-8")) for path in files])
        for path in files:
            path.unlink(missing_ok=True)
        return stored


def _sync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)

