"""The clip scorer: its synergy definition on a similarity whose answers are known, then on the real tiny CLIP."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from seir.operators.backends.base import SimilarityRequest, SimilarityResult
from seir.operators.scoring.clip import ClipScorer
from seir.operators.scoring.measures import content_words
from seir.operators.scoring.rubrics import TurnView


def picture(colour: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


REPOTTING, TRAFFIC = picture("sienna"), picture("grey")
SHOWS = {REPOTTING: {"hands", "roots", "pot", "soil"}, TRAFFIC: {"car", "road", "lights", "rain"}}


def known_similarity(requests: list[SimilarityRequest]) -> list[SimilarityResult]:
    """A stand-in for CLIP whose cosines are known: 0.1 plus 0.3 x the share of the picture's objects a text names
    (0.1 sits below the default 0.15 floor, a text naming everything at 0.4 above the 0.35 ceiling)."""
    results = []
    for request in requests:
        shown = SHOWS[request.image]
        named = [len(shown & content_words(text)) / len(shown) for text in request.texts]
        results.append(SimilarityResult([0.1 + 0.3 * share for share in named]))
    return results


QUESTION = "How do I move a plant with crowded roots into a bigger pot?"
ANSWER = "Water it first, slide out the root ball, loosen the roots and set it in a larger pot with fresh soil."
COMPLEMENT = "Hands loosening tangled roots above a pot."


def synergy(scorer: ClipScorer, image: bytes, caption: str | None) -> float:
    return scorer.score_turns([TurnView(QUESTION, ANSWER, caption, image)])[0].scores["image_text_synergy"]


def test_synergy_follows_its_definition() -> None:
    scorer = ClipScorer(known_similarity)
    result = scorer.score_turns([TurnView(QUESTION, ANSWER, COMPLEMENT, REPOTTING)])[0]
    # sim(image, answer) = 0.1 + 0.3 * 3/4 = 0.325 -> a = (0.325 - 0.15) / 0.2 = 0.875; the caption shares 2 of its
    # 6 content words with the answer (under the 0.4 floor), so r = 0 and synergy = 5 * a.
    assert result.raw["sim_answer"] == pytest.approx(0.325)
    assert result.raw["caption_restates_answer"] == 0.0
    assert result.scores["image_text_synergy"] == pytest.approx(5 * 0.875)
    # image content: question names roots and pot (0.25 -> 0.5), caption hands, roots, pot (0.875)
    assert result.scores["image_content"] == pytest.approx(5 * (0.5 + 0.875) / 2)


def test_a_copied_caption_scores_lower_on_synergy_than_a_complementing_one() -> None:
    scorer = ClipScorer(known_similarity)
    copied, complementing = synergy(scorer, REPOTTING, ANSWER), synergy(scorer, REPOTTING, COMPLEMENT)
    assert copied == pytest.approx(0.0)  # r = 1 and c = a: the caption explains all the image adds
    assert complementing > copied + 3
    assert synergy(scorer, REPOTTING, None) == pytest.approx(5 * 0.875)  # no caption: the image's agreement alone


def test_an_image_unrelated_to_the_answer_adds_nothing_whatever_its_caption() -> None:
    scorer = ClipScorer(known_similarity)
    assert synergy(scorer, TRAFFIC, COMPLEMENT) == 0.0
    assert synergy(scorer, TRAFFIC, "Cars on a wet road under traffic lights in the rain.") == 0.0


def test_missing_or_bad_pictures_and_texts_score_zero_with_reasons() -> None:
    seen: list[SimilarityRequest] = []

    def recording(requests: list[SimilarityRequest]) -> list[SimilarityResult]:
        seen.extend(requests)
        return known_similarity(requests)

    views = [TurnView(QUESTION, ANSWER, COMPLEMENT, None), TurnView(QUESTION, ANSWER, COMPLEMENT, b"\x00junk"),
             TurnView(QUESTION, None, COMPLEMENT, REPOTTING), TurnView("", ANSWER, COMPLEMENT, REPOTTING),
             TurnView(QUESTION, ANSWER, COMPLEMENT, REPOTTING)]
    no_image, junk, no_answer, no_question, good = ClipScorer(recording).score_turns(views)
    assert len(seen) == 2  # one request per usable turn, in one call
    assert no_image.scores == junk.scores == no_question.scores == {"image_content": 0.0, "image_text_synergy": 0.0}
    assert no_image.reasons == ["no image"] and "does not decode" in junk.reasons[0]
    assert "no question" in no_question.reasons[0]
    assert no_answer.scores["image_text_synergy"] == 0.0 and no_answer.scores["image_content"] > 0
    assert good.scores["image_text_synergy"] > 4


def test_odd_modes_reach_the_model_as_plain_rgb() -> None:
    sent: list[bytes] = []

    def capture(requests: list[SimilarityRequest]) -> list[SimilarityResult]:
        sent.extend(r.image for r in requests)
        return [SimilarityResult([0.3] * len(r.texts)) for r in requests]

    result = ClipScorer(capture).score_turns([TurnView(QUESTION, ANSWER, None, picture("sienna", "P"))])[0]
    assert Image.open(io.BytesIO(sent[0])).mode == "RGB"
    assert result.reasons == ["image converted from mode P"]


def test_on_the_tiny_clip_with_minilm(tiny_models: dict[str, Path]) -> None:
    from seir.operators.backends.clip import ClipSimilarity
    from seir.operators.backends.sentence_embed import SentenceEmbed

    scorer = ClipScorer(ClipSimilarity(str(tiny_models["clip"])).similarity,
                        SentenceEmbed("bundled:all-MiniLM-L6-v2").embed, cosine_range=(-0.5, 0.5))
    views = [TurnView(QUESTION, ANSWER, caption, REPOTTING) for caption in (ANSWER, COMPLEMENT)]
    copied, complementing = scorer.score_turns(views)
    for result in (copied, complementing):
        assert {"sim_question", "sim_answer", "sim_caption"} <= set(result.raw)
        assert all(0.0 <= v <= 5.0 for v in result.scores.values())
    assert copied.raw["caption_restates_answer"] == pytest.approx(1.0)
    assert copied.scores["image_text_synergy"] == pytest.approx(0.0, abs=1e-6)
    assert complementing.raw["caption_restates_answer"] < copied.raw["caption_restates_answer"]
    assert scorer.config()["text_cosine"] is True
