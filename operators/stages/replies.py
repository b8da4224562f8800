"""From a writer's reply to a draft's fields, and from a judged draft to the next round's request: the rules every
text stage shares."""

from __future__ import annotations

from seir.operators.backends.base import CallFailure
from seir.operators.stages.base import Draft
from seir.operators.stages.prompts import Revision, UnusableOutput, clean_reply, start_from


def revision(draft: Draft | None, text: str | None = None) -> Revision | None:
    """What a new round refines: the previous round's chosen draft (or ``text`` of it) and its critique."""
    if draft is None or not draft.ok:
        return None
    return Revision(draft=text if text is not None else draft.text or "", critique=draft.critique)


def take_text(draft: Draft, reply: str | CallFailure, what: str, into: str = "text") -> bool:
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


def take_caption(draft: Draft, reply: str | CallFailure, shown: int, into: str = "text") -> int | None:
    """``take_text`` for a caption: in a turn where the user shows ``shown`` pictures its last line may name the one
    to start from, which is cut from the caption and returned (``start_from``)."""
    chosen = None
    if isinstance(reply, str) and shown:
        reply, chosen = start_from(reply, shown)
    take_text(draft, reply, "caption", into)
    return chosen
