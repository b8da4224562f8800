"""The SEIR loop: generate -> self-evaluate -> refine, for every turn of every dialogue of a shard.

All dialogues of a shard that are at the same turn, stage and round form one batched call per model role;
refinement shrinks the active set. Each turn runs three stages (InterSyn's SEIR):

1. question: the ``llm`` writes the user's question; the judge critiques and scores it; the ``llm`` rewrites it.
2. answer: the ``llm`` writes the answer, then a caption that complements it; judged and rewritten the same way.
3. image: the ``image`` role renders the caption; the judge sees the current image and caption, critiques and
   scores them; the caption is rewritten and the image rendered again. Every image, the last one too, is scored.

In a turn where the user shows pictures, the render is an edit (``seir.edit``): it starts from the picture the
caption's last line names (the turn's first when it names none), every round of the stage starts from that same
picture so rounds do not drift, and the judge sees that picture, then the result.

Pictures a seed brings are shown where the user brings them: the writer sees them in every question, answer and
caption request (of their turn, and in the history of later ones) and the judge in every critique and score. A
dialogue whose seed brings pictures is written by the ``vlm`` role when the job has one, else by ``llm`` (which the
job check then requires to be served by a vision backend).

Each round of a stage writes ``seir.candidates`` drafts per dialogue (best-of-N), with distinct sampling seeds, all
judged in the same batches; the round's best (by mean score, or by the judge's pairwise comparisons where the job
ranks so) is the one the next round refines. The first candidate's key and seeds are those of a one-candidate job.

A stage stops early for a dialogue when every dimension it is judged on reaches the job's gate, or when the critic
finds nothing to fix. The best draft of each stage is kept, not merely the last. Acceptance (thresholds) is decided
afterwards from the kept drafts' scores, so changing thresholds never changes what was generated.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from seir.engine.keys import content_key
from seir.engine.records import Comparison, Dialogue, DialogueJudgement, DialogueTask, Draft, Ledger, Stage, Turn
from seir.engine.run.clients import ModelClient
from seir.engine.run.pools import CallFailure
from seir.engine.run.scoring import StageScorer
from seir.engine.spec import JobSpec
from seir.engine.store import ImageStore
from seir.operators.backends.base import ChatRequest, ChatResult, RenderRequest, Sampling
from seir.operators.context import DoesNotFit, Trim, Window
from seir.operators.scoring.pairwise import preference
from seir.operators.scoring.rubrics import DialogueView, TurnView, critique_finds_nothing, suggested_caption
from seir.operators.seir.prompts import (
    NEW_PICTURE,
    History,
    Revision,
    UnusableOutput,
    answer_messages,
    caption_messages,
    clean_reply,
    question_messages,
    start_from,
)

RETRY_TEMPERATURE = 0.7  # a failed draft retried greedily would fail the same way


@dataclass
class _Working:
    """One dialogue's state inside the loop."""

    task: DialogueTask
    turns: list[Turn] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    kept: dict[Stage, Draft] = field(default_factory=dict)  # the current turn's best draft per stage
    images: dict[str, bytes] = field(default_factory=dict)  # image key -> bytes, for the judge
    shown: list[tuple[bytes, ...]] = field(default_factory=list)  # the seed's pictures, per user turn
    comparisons: list[Comparison] = field(default_factory=list)  # pairwise judging of candidates
    failure: str = ""

    def shown_now(self) -> tuple[bytes, ...]:
        """The pictures the user brings with the current turn's question."""
        index = len(self.turns)
        return self.shown[index] if index < len(self.shown) else ()

    def shown_keys_now(self) -> tuple[str, ...]:
        """The image keys of ``shown_now``, in the same order."""
        return self.task.seed.images_of_turn(len(self.turns))

    def shown_picture(self, key: str | None) -> bytes | None:
        """The bytes of a picture the user shows with the current turn's question, by key."""
        return dict(zip(self.shown_keys_now(), self.shown_now(), strict=True)).get(key or "")

    def history(self) -> History:
        return History(tuple((t.question, t.answer) for t in self.turns), tuple(self.shown[: len(self.turns)]))

    def view(self, question: str, answer: str | None = None, caption: str | None = None,
             image: bytes | None = None, source: bytes | None = None) -> TurnView:
        earlier = [list(images) for images in self.shown[: len(self.turns)]]
        return TurnView(question=question, answer=answer, caption=caption, image=image,
                        history=[(t.question, t.answer) for t in self.turns], shown=list(self.shown_now()),
                        history_shown=earlier, source=source)


@dataclass
class ShardOutcome:
    dialogues: list[Dialogue]
    ledger: Ledger


class SeirLoop:
    def __init__(self, spec: JobSpec, clients: dict[str, ModelClient], scorer: StageScorer,
                 image_store: ImageStore) -> None:
        self.spec = spec
        self.llm = clients["llm"]
        self.vlm = clients.get("vlm", self.llm)  # writes the dialogues whose seeds bring pictures
        self.image = clients["image"]
        self.scorer = scorer
        self.image_store = image_store  # the seeds' pictures and every rendered one
        self.on_round: Callable[[int, Stage, int, int], None] = lambda turn, stage, round_, active: None

    async def run_shard(self, tasks: list[DialogueTask]) -> ShardOutcome:
        ledger = Ledger()
        # A shard's seed pictures are read from the image store when it starts and dropped with it: memory is bounded
        # by the shards in flight, never by the seed file.
        working = [_Working(task, shown=[tuple(self.image_store.get(key) for key in keys)
                                         for keys in task.seed.turn_images]) for task in tasks]
        for turn_index in range(max(task.turns for task in tasks)):
            active = [w for w in working if not w.failure and turn_index < w.task.turns]
            if not active:
                break
            for w in active:
                w.kept.clear()
            for stage in Stage:
                await self._refine(stage, [w for w in active if not w.failure], turn_index, ledger)
            for w in active:
                w.images.clear()  # the judge has seen them; the files are in the image store
                if not w.failure:
                    w.turns.append(self._finish_turn(w, turn_index))
        judgements = await self._judge_dialogues(working, ledger)
        return ShardOutcome([self._finish_dialogue(w, judgements.get(id(w))) for w in working], ledger)

    async def _judge_dialogues(self, working: list[_Working], ledger: Ledger) -> dict[int, DialogueJudgement]:
        """The dialogue-level dimensions the job weights, judged over every turn's text and pictures (the user's and
        the generated ones) once the dialogue is complete."""
        dimensions = self.scorer.dialogue_dimensions()
        complete = [w for w in working if not w.failure and w.turns]
        if not dimensions or not complete:
            return {}
        views = [DialogueView([TurnView(t.question, t.answer, t.caption,
                                        self.image_store.get(t.image_key) if t.image_key else None,
                                        shown=list(w.shown[t.index]) if t.index < len(w.shown) else [])
                               for t in w.turns]) for w in complete]
        verdicts = await self.scorer.verdicts_on(dimensions, views, ledger)
        return {id(w): DialogueJudgement(v.scores, v.critique, v.call_keys, v.failure)
                for w, v in zip(complete, verdicts, strict=True)}

    async def _refine(self, stage: Stage, group: list[_Working], turn_index: int, ledger: Ledger) -> None:
        """Rounds of one stage for every dialogue of ``group``: each round writes ``seir.candidates`` drafts per
        active dialogue, all judged in the same batches; the round's best (by mean score, or by pairwise wins where
        the job ranks so) is the one the next round refines from."""
        n = self.spec.seir.candidates_for(stage)
        compare = n > 1 and self.spec.seir.pairwise != "off"
        previous: dict[int, Draft] = {}
        active = list(range(len(group)))
        for round_ in range(self.spec.seir.rounds + 1):
            if not active:
                break
            self.on_round(turn_index, stage, round_, len(active))
            slots = [(i, candidate) for i in active for candidate in range(n)]
            members = [group[i] for i, _ in slots]
            drafts = await self._write(stage, members, [previous.get(i) for i, _ in slots], turn_index, round_,
                                       [candidate for _, candidate in slots], ledger)
            judged = [(w, d) for w, d in zip(members, drafts, strict=True) if d.ok]
            verdicts = await self.scorer.verdicts(stage, [_view(stage, w, d) for w, d in judged], ledger)
            for (_, draft), verdict in zip(judged, verdicts, strict=True):
                verdict.apply(draft)
            standing = await self._compare(stage, members, drafts, n, ledger) if compare else {}
            still_active = []
            for position, i in enumerate(active):
                w, candidates = group[i], drafts[position * n:(position + 1) * n]
                w.drafts.extend(candidates)
                chosen = _choose(candidates, standing if self.spec.seir.pairwise == "rank" else {})
                chosen.round_best = True
                previous[i] = chosen
                best = w.kept.get(stage)
                if chosen.ok and (best is None or chosen.mean_score() > best.mean_score()):
                    w.kept[stage] = chosen
                if not (chosen.ok and (chosen.passed or critique_finds_nothing(chosen.critique))):
                    still_active.append(i)
            active = still_active
        for i, w in enumerate(group):
            if stage in w.kept:
                w.kept[stage].best = True
            else:
                last = previous[i].reason
                w.failure = f"turn {turn_index + 1}: {stage.value} stage gave no usable draft in any round ({last})"

    async def _compare(self, stage: Stage, members: list[_Working], drafts: list[Draft], n: int,
                       ledger: Ledger) -> dict[str, float]:
        """Every two judged candidates of a dialogue's round compared by the judge (both orders, recorded on the
        dialogue); returns each candidate's mean preference over its comparisons (0-1), by draft key."""
        pairs, compared = [], []
        for start in range(0, len(drafts), n):
            w = members[start]
            judged = [d for d in drafts[start:start + n] if d.ok]
            for first, second in itertools.combinations(judged, 2):
                pairs.append((_view(stage, w, first), _view(stage, w, second)))
                compared.append((w, first, second))
        readings = await self.scorer.compare(stage, pairs, ledger)
        if readings is None:
            return {}
        shares: dict[str, list[float]] = {}
        for (w, first, second), (given, swapped) in zip(compared, readings, strict=True):
            for shown_first, shown_second, reading in ((first, second, given), (second, first, swapped)):
                w.comparisons.append(Comparison(first.dialogue_key, first.turn_index, stage, first.round,
                                                shown_first.draft_key, shown_second.draft_key, reading.p_first,
                                                reading.p_second, reading.p_tie, reading.call_key))
            share = preference(given, swapped)
            shares.setdefault(first.draft_key, []).append(share)
            shares.setdefault(second.draft_key, []).append(1 - share)
        return {key: sum(values) / len(values) for key, values in shares.items()}

    async def _write(self, stage: Stage, group: list[_Working], previous: list[Draft | None], turn_index: int,
                     round_: int, candidates: list[int], ledger: Ledger) -> list[Draft]:
        drafts = [
            Draft(draft_key=content_key([w.task.dialogue_key, turn_index, stage.value, round_,
                                         *_candidate_part(candidate)]),
                  dialogue_key=w.task.dialogue_key, turn_index=turn_index, stage=stage, round=round_, text=None,
                  candidate=candidate)
            for w, candidate in zip(group, candidates, strict=True)
        ]
        if stage is Stage.QUESTION:
            await self._write_questions(group, drafts, previous, ledger)
        elif stage is Stage.ANSWER:
            await self._write_answers(group, drafts, previous, ledger)
        else:
            await self._write_images(group, drafts, previous, ledger)
        return drafts

    async def _write_questions(self, group: list[_Working], drafts: list[Draft], previous: list[Draft | None],
                               ledger: Ledger) -> None:
        limit = self.spec.seir.question_words
        prompts = [_Prompt.over(w.history(), partial(question_messages, w.task.seed.text, max_words=limit,
                                                     revision=_revision(p), images=w.shown_now()))
                   for w, p in zip(group, previous, strict=True)]
        replies = await self._chat(prompts, group, drafts, previous, "question", ledger)
        for draft, reply in zip(drafts, replies, strict=True):
            _take_text(draft, reply, "question")

    async def _write_answers(self, group: list[_Working], drafts: list[Draft], previous: list[Draft | None],
                             ledger: Ledger) -> None:
        questions = [w.kept[Stage.QUESTION].text or "" for w in group]
        prompts = [_Prompt.over(w.history(), partial(answer_messages, q, revision=_revision(p), images=w.shown_now()))
                   for w, q, p in zip(group, questions, previous, strict=True)]
        replies = await self._chat(prompts, group, drafts, previous, "answer", ledger)
        for draft, reply in zip(drafts, replies, strict=True):
            _take_text(draft, reply, "answer")
        writing = [(w, d, q, p) for w, d, q, p in zip(group, drafts, questions, previous, strict=True) if d.ok]
        caption_prompts = [
            self._caption_prompt(w, q, d.text or "", _revision(p, p.caption if p else None))
            for w, d, q, p in writing
        ]
        captions = await self._chat(caption_prompts, [w for w, _, _, _ in writing], [d for _, d, _, _ in writing],
                                    [p for _, _, _, p in writing], "caption", ledger)
        for (w, draft, _, _), reply in zip(writing, captions, strict=True):
            draft.start_from = _take_caption(draft, reply, len(w.shown_now()), into="caption")

    async def _write_images(self, group: list[_Working], drafts: list[Draft], previous: list[Draft | None],
                            ledger: Ledger) -> None:
        captions: list[str | None] = []
        rewrite = []
        for i, (w, p) in enumerate(zip(group, previous, strict=True)):
            if p is None:
                captions.append(w.kept[Stage.ANSWER].caption)
            elif p.ok and (proposed := suggested_caption(p.critique)):
                captions.append(proposed)
            else:
                captions.append(None)
                rewrite.append(i)
        if rewrite:
            prompts = [
                self._caption_prompt(group[i], group[i].kept[Stage.QUESTION].text or "",
                                     group[i].kept[Stage.ANSWER].text or "", _revision(previous[i]))
                for i in rewrite
            ]
            replies = await self._chat(prompts, [group[i] for i in rewrite], [drafts[i] for i in rewrite],
                                       [previous[i] for i in rewrite], "caption", ledger)
            for i, reply in zip(rewrite, replies, strict=True):
                # A rewrite keeps the turn's source: a picture named again here would let rounds drift.
                _take_caption(drafts[i], reply, len(group[i].shown_now()))
                if drafts[i].ok:
                    captions[i] = drafts[i].text
        seir = self.spec.seir
        rendering = [i for i, caption in enumerate(captions) if caption]
        for i in rendering:
            drafts[i].source_key = self._edit_source(group[i])
        requests = [
            RenderRequest(prompt=captions[i] or "", seed=_seed(self.spec, group[i], drafts[i], "render"),
                          width=seir.image_width, height=seir.image_height, steps=seir.image_steps,
                          guidance_scale=seir.guidance_scale, source=group[i].shown_picture(drafts[i].source_key),
                          strength=seir.edit_strength if drafts[i].source_key else None)
            for i in rendering
        ]
        images = await self.image.render(requests, ledger)
        for i, image in zip(rendering, images, strict=True):
            draft = drafts[i]
            draft.text = captions[i]
            draft.call_keys.append(image.call_key)
            if isinstance(image, CallFailure):
                draft.ok, draft.reason = False, image.reason
            else:
                draft.image_key = image.key
                group[i].images[image.key] = image.png
        for draft in drafts:
            draft.caption = draft.text

    def _edit_source(self, w: _Working) -> str | None:
        """The key of the picture this turn's render starts from (``seir.edit``), None to render from the caption:
        the picture the kept answer's caption named among those the user shows with the question, the first of them
        when it named none (or, under "always", when it asked for a new picture)."""
        keys = w.shown_keys_now()
        if self.spec.seir.edit == "never" or not keys:
            return None
        chosen = w.kept[Stage.ANSWER].start_from
        if chosen == NEW_PICTURE and self.spec.seir.edit == "auto":
            return None
        return keys[(chosen or 1) - 1]

    def _caption_prompt(self, w: _Working, question: str, answer: str, revision: Revision | None) -> _Prompt:
        """A caption request shows every picture the user has brought so far: those of earlier turns are history
        (left out first, oldest first, when the window needs it), those of this turn are not."""
        def build(history: History) -> list[dict]:
            return caption_messages(question, answer, self.spec.seir.caption_words, revision,
                                    [*history.pictures(), *w.shown_now()], w.shown_now())

        return _Prompt.over(w.history(), build)

    async def _chat(self, prompts: list[_Prompt], group: list[_Working], drafts: list[Draft],
                    previous: list[Draft | None], purpose: str, ledger: Ledger) -> list[str | CallFailure]:
        """One batched call per writer: the vision writer for dialogues whose seed brings pictures, else ``llm``.
        Each request is fitted to the writer's window first; one that cannot fit fails its draft unsent."""
        by_writer: dict[str, list[int]] = {}
        for i, w in enumerate(group):
            by_writer.setdefault((self.vlm if w.task.seed.turn_images else self.llm).role, []).append(i)
        writers = {client.role: client for client in (self.llm, self.vlm)}

        async def write(role: str, members: list[int]) -> list[ChatResult | CallFailure]:
            sampling = self.spec.roles[role].sampling
            window = writers[role].window
            requests, sent, results = [], [], {}
            for i in members:
                prior = previous[i]
                temperature = sampling.temperature
                if prior is not None and not prior.ok:
                    temperature = max(temperature, RETRY_TEMPERATURE)
                try:
                    messages = prompts[i].fitted(window, sampling.max_new_tokens, purpose)
                except DoesNotFit as err:
                    results[i] = CallFailure(str(err))
                    continue
                sent.append(i)
                requests.append(ChatRequest(messages, Sampling(sampling.max_new_tokens, temperature, sampling.top_p,
                                                               _seed(self.spec, group[i], drafts[i], purpose))))
            results.update(zip(sent, await writers[role].chat(requests, ledger), strict=True))
            return [results[i] for i in members]

        answers = await asyncio.gather(*(write(role, members) for role, members in by_writer.items()))
        placed = {i: result for members, found in zip(by_writer.values(), answers, strict=True)
                  for i, result in zip(members, found, strict=True)}
        results = [placed[i] for i in range(len(group))]
        for draft, result in zip(drafts, results, strict=True):
            if result.call_key:  # a request that did not fit was never sent
                draft.call_keys.append(result.call_key)
        return [r if isinstance(r, CallFailure) else r.text for r in results]

    def _finish_turn(self, w: _Working, turn_index: int) -> Turn:
        question, answer, image = (w.kept[stage] for stage in Stage)
        # Each dimension comes from the kept draft of the stage that judged it.
        scores = {dim: value for draft in (question, answer, image) for dim, value in draft.combined().items()}
        return Turn(index=turn_index, question=question.text or "", answer=answer.text or "",
                    caption=image.text or "", image_key=image.image_key, scores=scores, source_key=image.source_key)

    def _finish_dialogue(self, w: _Working, judgement: DialogueJudgement | None) -> Dialogue:
        return Dialogue(dialogue_id=w.task.dialogue_id, dialogue_key=w.task.dialogue_key, seed=w.task.seed,
                        turns=w.turns, drafts=w.drafts, failure=w.failure, judgement=judgement,
                        comparisons=w.comparisons)


@dataclass(frozen=True)
class _Prompt:
    """A writer's request before it is fitted: how to build it with some earlier turns left out, and those turns."""

    build: Callable[[Trim], list[dict]]
    earlier: list[tuple[str, str, tuple[bytes, ...]]]

    @classmethod
    def over(cls, history: History, write: Callable[[History], list[dict]]) -> _Prompt:
        return cls(lambda trim: write(history.fitted(trim)), history.earlier())

    def fitted(self, window: Window | None, reply: int, what: str) -> list[dict]:
        if window is None:
            return self.build(Trim())
        return window.fit(self.build, self.earlier, reply, what).messages


def _view(stage: Stage, working: _Working, draft: Draft) -> TurnView:
    """What the scorers see of a draft: the stage's own text with the turn's kept earlier stages."""
    if stage is Stage.QUESTION:
        return working.view(draft.text or "")
    question = working.kept[Stage.QUESTION].text or ""
    if stage is Stage.ANSWER:
        return working.view(question, draft.text, draft.caption)
    answer = working.kept[Stage.ANSWER].text or ""
    return working.view(question, answer, draft.text, working.images.get(draft.image_key or ""),
                        working.shown_picture(draft.source_key))


def _revision(draft: Draft | None, text: str | None = None) -> Revision | None:
    if draft is None or not draft.ok:
        return None
    return Revision(draft=text if text is not None else draft.text or "", critique=draft.critique)


def _take_caption(draft: Draft, reply: str | CallFailure, shown: int, into: str = "text") -> int | None:
    """``_take_text`` for a caption: in a turn where the user shows ``shown`` pictures its last line may name the one
    to start from, which is cut from the caption and returned (``start_from``)."""
    chosen = None
    if isinstance(reply, str) and shown:
        reply, chosen = start_from(reply, shown)
    _take_text(draft, reply, "caption", into)
    return chosen


def _take_text(draft: Draft, reply: str | CallFailure, what: str, into: str = "text") -> bool:
    """Put a cleaned reply into the draft, or mark the draft failed with the reason."""
    if isinstance(reply, CallFailure):
        draft.ok, draft.reason = False, reply.reason
        return False
    try:
        setattr(draft, into, clean_reply(reply, what))
    except UnusableOutput as err:
        draft.ok, draft.reason = False, str(err)
        setattr(draft, into, reply)
        return False
    return True


def _seed(spec: JobSpec, working: _Working, draft: Draft, purpose: str) -> int:
    """A sampling seed fixed by what the sample is for: the seed's own key, the turn, stage, round and purpose.
    Never the dialogue key, which holds every role's config: then swapping the image model would change the
    question's sample, and no call of a remade dialogue could come from the cache."""
    where = [working.task.seed.seed_key, draft.turn_index, draft.stage.value, draft.round, purpose,
             *_candidate_part(draft.candidate)]
    return int(content_key([spec.execution.seed, *where])[:15], 16)


def _candidate_part(candidate: int) -> list[int]:
    """What a candidate adds to its draft's key and its sampling seeds: nothing for the first, so a job of one
    candidate per round keeps every key and output it had."""
    return [candidate] if candidate else []


def _choose(candidates: list[Draft], standing: dict[str, float]) -> Draft:
    """The round's best judged candidate: by pairwise standing where given, then by mean score (the first on a
    tie); the first candidate when none could be judged (its reason explains the round)."""
    judged = [d for d in candidates if d.ok]
    if not judged:
        return candidates[0]
    return max(judged, key=lambda d: (standing.get(d.draft_key, 0.0), d.mean_score()))
