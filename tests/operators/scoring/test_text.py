"""The text scorer on the real all-MiniLM-L6-v2: relevance, repetition, length limits, caption redundancy, bad text."""

from __future__ import annotations

import pytest

from seir.operators.backends.sentence_embed import SentenceEmbed
from seir.operators.scoring.base import ScorerResult
from seir.operators.scoring.rubrics import TurnView
from seir.operators.scoring.text import TextScorer

QUESTION = "How do I repot a root-bound houseplant without hurting it?"
ANSWER = ("Water the plant a day before, tip the pot and slide the root ball out. Tease apart circling roots, trim any "
          "that are dead, and set it in a pot one size larger with fresh mix at the same depth. Water thoroughly and "
          "keep it out of direct sun for a week.")
COMPLEMENT = ("A close-up of hands loosening a tangled white root ball above a terracotta pot, with a bag of fresh "
              "potting mix beside it.")
PARAPHRASE = ("Water the plant, slide out the root ball, tease apart the roots and put it into a larger pot with "
              "fresh mix.")
OFF_TOPIC = ("The stock market closed higher on Tuesday as technology shares rallied after the central bank held its "
             "rates steady.")


@pytest.fixture(scope="module")
def scorer() -> TextScorer:
    return TextScorer(SentenceEmbed("bundled:all-MiniLM-L6-v2").embed)


def one(scorer: TextScorer, **fields: str | None) -> ScorerResult:
    return scorer.score_turns([TurnView(**{"question": QUESTION, **fields})])[0]


def test_a_relevant_answer_beats_an_off_topic_one(scorer: TextScorer) -> None:
    good, bad = scorer.score_turns([TurnView(QUESTION, ANSWER), TurnView(QUESTION, OFF_TOPIC)])
    assert good.raw["relevance_cosine"] > bad.raw["relevance_cosine"] + 0.2
    assert good.scores["text_content"] > 3.5 > 1.0 > bad.scores["text_content"]
    assert good.reasons == bad.reasons == []


def test_repetition_is_penalised(scorer: TextScorer) -> None:
    looping = " ".join(["Tease apart the roots and water it well."] * 6)
    fresh, loop = one(scorer, answer=ANSWER), one(scorer, answer=looping)
    assert fresh.raw["answer_repetition"] == 0.0 and loop.raw["answer_repetition"] > 0.7
    assert loop.scores["text_content"] < 0.5 < fresh.scores["text_content"]


def test_length_limits_follow_the_job(scorer: TextScorer) -> None:
    long_question = "Could you explain " + "in great detail " * 20 + "how to repot a houseplant?"
    assert one(scorer).scores["question"] == 5.0
    assert 0 < one(scorer, question=long_question).scores["question"] < 5.0
    assert one(scorer, question=long_question * 3).scores["question"] == 0.0
    strict = TextScorer(scorer.embed, question_words=5, caption_words=10, answer_words=20)
    result = strict.score_turns([TurnView(QUESTION, ANSWER, COMPLEMENT)])[0]
    assert result.scores["question"] < 5.0 and result.raw["answer_words"] > 40
    assert result.scores["text_content"] == 0.0  # over twice the answer limit
    assert result.scores["image_text_synergy"] < one(scorer, answer=ANSWER, caption=COMPLEMENT).scores[
        "image_text_synergy"]


def test_a_caption_that_repeats_the_answer_scores_lower_on_synergy(scorer: TextScorer) -> None:
    copied, paraphrased, complementing = scorer.score_turns(
        [TurnView(QUESTION, ANSWER, caption) for caption in (ANSWER, PARAPHRASE, COMPLEMENT)])
    assert copied.raw["redundancy"] == pytest.approx(1.0)
    assert copied.scores["image_text_synergy"] <= paraphrased.scores["image_text_synergy"]
    assert paraphrased.raw["redundancy"] > 0.5
    assert paraphrased.scores["image_text_synergy"] < complementing.scores["image_text_synergy"]
    assert complementing.scores["image_text_synergy"] > 4.0
    assert "image_text_synergy" not in one(scorer, answer=ANSWER).scores  # no caption: nothing to judge


def test_empty_text_scores_zero_with_a_reason(scorer: TextScorer) -> None:
    result = one(scorer, answer="   ")
    assert result.scores["text_content"] == 0.0 and "answer is empty" in result.reasons
    empty_question = scorer.score_turns([TurnView("", ANSWER)])[0]
    assert empty_question.scores == {"question": 0.0, "text_content": 0.0}
    question_stage = scorer.score_turns([TurnView(QUESTION)])[0]
    assert question_stage.reasons == [] and question_stage.scores["text_content"] == 0.0


def test_enormous_text_is_truncated_with_a_reason(scorer: TextScorer) -> None:
    result = one(scorer, answer=" ".join([ANSWER] * 200))
    assert any(r.startswith("answer truncated from") and "to 20000 characters" in r for r in result.reasons)
    assert result.raw["answer_words"] < 5000 and result.raw["answer_repetition"] > 0.9


@pytest.mark.parametrize("text", [
    "如何在不伤害植物的情况下给根系过满的室内植物换盆？请详细说明步骤。",
    "Wie topfe ich eine Zimmerpflanze um, deren Wurzeln den Topf füllen, ohne sie zu verletzen? Bitte Schritt für "
    "Schritt erklären.",
])
def test_text_that_is_not_english_gets_a_reason(scorer: TextScorer, text: str) -> None:
    result = one(scorer, answer=text)
    assert any("does not look like English" in r for r in result.reasons)
    assert result.scores["text_content"] == 0.0
    lenient = TextScorer(scorer.embed, english=False).score_turns([TurnView(QUESTION, text)])[0]
    assert lenient.reasons == [] and "relevance_cosine" in lenient.raw


def test_one_embedding_call_per_batch(scorer: TextScorer) -> None:
    calls: list[int] = []

    def counting(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return scorer.embed(texts)

    views = [TurnView(QUESTION, ANSWER, COMPLEMENT), TurnView(QUESTION), TurnView(QUESTION, ANSWER)]
    TextScorer(counting).score_turns(views)
    assert calls == [6]
