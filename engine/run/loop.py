"""The SEIR loop: generate -> self-evaluate -> refine, for every turn of every dialogue of a shard.

All dialogues of a shard that are at the same turn, stage and round form one batched call per model role;
refinement shrinks the active set. Each turn runs the job's stages in order (``seir.stages``; InterSyn's SEIR has
three: question, answer with its caption, image). A stage is a declared unit (``seir.operators.stages``): it builds
its writer's requests from the turn's context and says what the judge sees of its drafts; this loop never names one.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from seir.engine.keys import content_key
from seir.engine.records import Comparison, Dialogue, DialogueJudgement, DialogueTask, Draft, Ledger, Turn
from seir.engine.run.clients import ModelClient
from seir.engine.run.scoring import StageScorer
from seir.engine.spec import JobSpec
from seir.engine.store import ImageStore
from seir.operators.backends.base import CallFailure, ChatRequest, ChatResult, RenderRequest, Sampling
from seir.operators.context import DoesNotFit
from seir.operators.scoring.pairwise import preference
from seir.operators.scoring.rubrics import DialogueView, TurnView, critique_finds_nothing
from seir.operators.stages import TEXT_WRITER, VISION_WRITER, Prompt, Stage, TurnContext
from seir.operators.stages.base import Rendered

RETRY_TEMPERATURE = 0.7  # a failed draft retried greedily would fail the same way


@dataclass
class _Working:
    """One dialogue's state inside the loop."""

    task: DialogueTask
    turns: list[Turn] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    shown: list[tuple[bytes, ...]] = field(default_factory=list)  # the seed's pictures, per user turn
    comparisons: list[Comparison] = field(default_factory=list)  # pairwise judging of candidates
    turn: TurnContext | None = None  # the turn being made: what its stages write from and the judge sees
    failure: str = ""

    def next_turn(self) -> TurnContext:
        """The context of the turn after those made: the seed's request, the turns made, and the pictures the user
        brought in them and brings now."""
        seed = self.task.seed
        return TurnContext.at(len(self.turns), [(t.question, t.answer) for t in self.turns], self.shown,
                              seed.turn_images, opening=seed.text, seed_key=seed.seed_key)

    @property
    def context(self) -> TurnContext:
        assert self.turn is not None, "a turn's context is made when the turn starts"
        return self.turn


@dataclass
class ShardOutcome:
    dialogues: list[Dialogue]
    ledger: Ledger


class SeirLoop:
    def __init__(self, spec: JobSpec, clients: dict[str, ModelClient], scorer: StageScorer,
                 image_store: ImageStore) -> None:
        self.spec = spec
        self.stages = spec.seir.stage_units()
        self.clients = clients
        self.scorer = scorer
        self.image_store = image_store  # the seeds' pictures and every rendered one
        self.on_round: Callable[[int, str, int, int], None] = lambda turn, stage, round_, active: None

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
                w.turn = w.next_turn()
            for stage in self.stages:
                await self._refine(stage, [w for w in active if not w.failure], turn_index, ledger)
            for w in active:
                if not w.failure:
                    w.turns.append(self._finish_turn(w, turn_index))
                w.turn = None  # the judge has seen its pictures; the files are in the image store
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
        n = self.spec.seir.candidates_for(stage.name)
        compare = n > 1 and self.spec.seir.pairwise != "off"
        writer = _Writer(self.spec, self.clients, stage, ledger)
        previous: dict[int, Draft] = {}
        kept: dict[int, Draft] = {}
        active = list(range(len(group)))
        for round_ in range(self.spec.seir.rounds + 1):
            if not active:
                break
            self.on_round(turn_index, stage.name, round_, len(active))
            slots = [(i, candidate) for i in active for candidate in range(n)]
            members = [group[i] for i, _ in slots]
            drafts = [Draft(draft_key=content_key([w.task.dialogue_key, turn_index, stage.name, round_,
                                                   *_candidate_part(candidate)]),
                            dialogue_key=w.task.dialogue_key, turn_index=turn_index, stage=stage.name, round=round_,
                            text=None, candidate=candidate)
                      for w, (_, candidate) in zip(members, slots, strict=True)]
            await stage.write([w.context for w in members], drafts, [previous.get(i) for i, _ in slots], writer)
            judged = [(w, d) for w, d in zip(members, drafts, strict=True) if d.ok]
            verdicts = await self.scorer.verdicts(stage, [stage.view(w.context, d) for w, d in judged], ledger)
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
                best = kept.get(i)
                if chosen.ok and (best is None or chosen.mean_score() > best.mean_score()):
                    kept[i] = chosen
                if not (chosen.ok and (chosen.passed or critique_finds_nothing(chosen.critique))):
                    still_active.append(i)
            active = still_active
        for i, w in enumerate(group):
            if i in kept:
                kept[i].best = True
                w.context.kept[stage.name] = kept[i]
                w.context.briefs += [brief for brief in [stage.brief(kept[i])] if brief]
            else:
                last = previous[i].reason
                w.failure = f"turn {turn_index + 1}: {stage.name} stage gave no usable draft in any round ({last})"

    async def _compare(self, stage: Stage, members: list[_Working], drafts: list[Draft], n: int,
                       ledger: Ledger) -> dict[str, float]:
        """Every two judged candidates of a dialogue's round compared by the judge (both orders, recorded on the
        dialogue); returns each candidate's mean preference over its comparisons (0-1), by draft key."""
        pairs, compared = [], []
        for start in range(0, len(drafts), n):
            w = members[start]
            judged = [d for d in drafts[start:start + n] if d.ok]
            for first, second in itertools.combinations(judged, 2):
                pairs.append((stage.view(w.context, first), stage.view(w.context, second)))
                compared.append((w, first, second))
        readings = await self.scorer.compare(stage, pairs, ledger)
        if readings is None:
            return {}
        shares: dict[str, list[float]] = {}
        for (w, first, second), (given, swapped) in zip(compared, readings, strict=True):
            for shown_first, shown_second, reading in ((first, second, given), (second, first, swapped)):
                w.comparisons.append(Comparison(first.dialogue_key, first.turn_index, stage.name, first.round,
                                                shown_first.draft_key, shown_second.draft_key, reading.p_first,
                                                reading.p_second, reading.p_tie, reading.call_key))
            share = preference(given, swapped)
            shares.setdefault(first.draft_key, []).append(share)
            shares.setdefault(second.draft_key, []).append(1 - share)
        return {key: sum(values) / len(values) for key, values in shares.items()}

    def _finish_turn(self, w: _Working, turn_index: int) -> Turn:
        """The turn as its stages kept it: each field from the kept draft of the stage that writes it, and each
        dimension's score from the kept draft of the stage judged on it."""
        found: dict[str, str | None] = {"question": "", "answer": "", "caption": "", "image": None, "source": None}
        scores: dict[str, float] = {}
        for stage in self.stages:
            draft = w.context.kept[stage.name]
            scores.update(draft.combined())
            for name in stage.writes:
                if name == "image":
                    found["image"], found["source"] = draft.image_key, draft.source_key
                elif name in found:
                    found[name] = (draft.caption if name == "caption" else draft.text) or ""
        return Turn(index=turn_index, question=found["question"] or "", answer=found["answer"] or "",
                    caption=found["caption"] or "", image_key=found["image"], scores=scores,
                    source_key=found["source"])

    def _finish_dialogue(self, w: _Working, judgement: DialogueJudgement | None) -> Dialogue:
        return Dialogue(dialogue_id=w.task.dialogue_id, dialogue_key=w.task.dialogue_key, seed=w.task.seed,
                        turns=w.turns, drafts=w.drafts, failure=w.failure, judgement=judgement,
                        comparisons=w.comparisons)


class _Writer:
    """What a stage writes with (``seir.operators.stages.Writer``): its chat requests go to the role it declares
    "chat" on (the vision writer standing in for the text writer on dialogues whose seeds bring pictures), fitted to
    that role's window, seeded by what each sample is for; its renders to the role it declares "render" on. Every
    call is batched across the dialogues of a round, cached and recorded in the shard's ledger."""

    def __init__(self, spec: JobSpec, clients: dict[str, ModelClient], stage: Stage, ledger: Ledger) -> None:
        self.spec, self.clients, self.stage, self.ledger = spec, clients, stage, ledger
        self.chat_role = next((r for r, uses in stage.roles.items() if "chat" in uses), TEXT_WRITER)
        self.render_role = next((r for r, uses in stage.roles.items() if "render" in uses), "image")

    def _chat_role_for(self, turn: TurnContext) -> str:
        if turn.has_pictures and self.chat_role == TEXT_WRITER and VISION_WRITER in self.clients:
            return VISION_WRITER
        return self.chat_role

    async def chat(self, purpose: str, turns: Sequence[TurnContext], drafts: Sequence[Draft],
                   previous: Sequence[Draft | None], prompts: Sequence[Prompt]) -> list[str | CallFailure]:
        """One batched call per writer role. Each request is fitted to the writer's window first; one that cannot
        fit fails its draft unsent."""
        by_role: dict[str, list[int]] = {}
        for i, turn in enumerate(turns):
            by_role.setdefault(self._chat_role_for(turn), []).append(i)

        async def write(role: str, members: list[int]) -> list[ChatResult | CallFailure]:
            sampling = self.spec.roles[role].sampling
            client = self.clients[role]
            requests, sent, results = [], [], {}
            for i in members:
                prior = previous[i]
                temperature = sampling.temperature
                if prior is not None and not prior.ok:
                    temperature = max(temperature, RETRY_TEMPERATURE)
                try:
                    messages = prompts[i].fitted(client.window, sampling.max_new_tokens, purpose)
                except DoesNotFit as err:
                    results[i] = CallFailure(str(err))
                    continue
                sent.append(i)
                requests.append(ChatRequest(messages, Sampling(sampling.max_new_tokens, temperature, sampling.top_p,
                                                               self.sampling_seed(turns[i], drafts[i], purpose))))
            results.update(zip(sent, await client.chat(requests, self.ledger), strict=True))
            return [results[i] for i in members]

        answers = await asyncio.gather(*(write(role, members) for role, members in by_role.items()))
        placed = {i: result for members, found in zip(by_role.values(), answers, strict=True)
                  for i, result in zip(members, found, strict=True)}
        results = [placed[i] for i in range(len(turns))]
        for draft, result in zip(drafts, results, strict=True):
            if result.call_key:  # a request that did not fit was never sent
                draft.call_keys.append(result.call_key)
        return [r if isinstance(r, CallFailure) else r.text for r in results]

    async def render(self, drafts: Sequence[Draft], requests: Sequence[RenderRequest]) -> list[Rendered | CallFailure]:
        images = await self.clients[self.render_role].render(list(requests), self.ledger)
        for draft, image in zip(drafts, images, strict=True):
            draft.call_keys.append(image.call_key)
        return images  # type: ignore[return-value]

    def sampling_seed(self, turn: TurnContext, draft: Draft, purpose: str) -> int:
        """A sampling seed fixed by what the sample is for: the seed's own key, the turn, stage, round and purpose.
        Never the dialogue key, which holds every role's config: then swapping the image model would change the
        question's sample, and no call of a remade dialogue could come from the cache."""
        where = [turn.seed_key, draft.turn_index, draft.stage, draft.round, purpose, *_candidate_part(draft.candidate)]
        return int(content_key([self.spec.execution.seed, *where])[:15], 16)


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
