"""Bad input, handled before any scorer looks at it: every problem becomes a reason, never a crashed batch.

Images are checked for size from the header before a pixel is decoded (a decompression bomb is refused without
allocating it), then converted from odd modes (CMYK, palette, 16-bit, alpha) to 8-bit RGB. Text is truncated when
enormous and flagged when it does not look like English.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from seir.operators.scoring.measures import STOPWORDS, words
from seir.operators.scoring.rubrics import DialogueView, TurnView, View

MAX_TEXT_CHARS = 20_000
MAX_PIXELS = 4096 * 4096  # PIL's own bomb limit (89 M pixels) would let a 270 MB RGB decode through
MIN_SIDE = 8  # below this no metric (Laplacian, 8x8 blocks) means anything


def guard_text(text: str | None, field: str, max_chars: int = MAX_TEXT_CHARS) -> tuple[str, list[str]]:
    """The text as scored ("" for None) and the reasons it was changed."""
    text = text or ""
    if len(text) <= max_chars:
        return text, []
    return text[:max_chars], [f"{field} truncated from {len(text)} to {max_chars} characters"]


def guarded_view(view: View, max_chars: int = MAX_TEXT_CHARS, max_pixels: int = MAX_PIXELS) -> tuple[View, list[str]]:
    """The view with enormous texts cut and pictures made model-ready; a refused picture becomes None (missing)."""
    if isinstance(view, DialogueView):
        turns = [_guarded_turn(turn, max_chars, max_pixels, f"turn {n} ") for n, turn in enumerate(view.turns, 1)]
        return DialogueView([t for t, _ in turns]), [r for _, reasons in turns for r in reasons]
    return _guarded_turn(view, max_chars, max_pixels, "")


def _guarded_turn(turn: TurnView, max_chars: int, max_pixels: int, where: str) -> tuple[TurnView, list[str]]:
    reasons: list[str] = []

    def cut(text: str | None, field: str) -> str | None:
        if text is None:  # not part of this stage: stays absent rather than becoming ""
            return None
        text, why = guard_text(text, where + field, max_chars)
        reasons.extend(why)
        return text

    def ready(images: list[bytes], field: str) -> list[bytes]:
        """The pictures the user showed that a model can read; a refused one is left out, with its reason."""
        kept = []
        for number, data in enumerate(images, 1):
            checked, why = model_ready_image(data, max_pixels)
            reasons.extend(f"{where}{field} {number}: {r}" for r in why)
            if checked is not None:
                kept.append(checked)
        return kept

    image, why = model_ready_image(turn.image, max_pixels) if turn.image is not None else (None, [])
    reasons += [where + r for r in why]
    source = None
    if turn.source is not None:
        source, why = model_ready_image(turn.source, max_pixels)
        reasons += [f"{where}source picture: {r}" for r in why]
    history = [(cut(q, "history question") or "", cut(a, "history answer") or "") for q, a in turn.history]
    clean = TurnView(cut(turn.question, "question") or "", cut(turn.answer, "answer"), cut(turn.caption, "caption"),
                     image, history, ready(turn.shown, "shown picture"),
                     [ready(images, f"turn {i + 1} shown picture") for i, images in enumerate(turn.history_shown)],
                     source=source)
    return clean, reasons


def language_problem(text: str, field: str) -> str | None:
    """A reason when ``text`` does not look like English: mostly non-ASCII letters, or 8+ words of which almost
    none is a common English function word. Short text gives too little evidence and passes."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 20:
        ascii_share = sum(c.isascii() for c in letters) / len(letters)
        if ascii_share < 0.8:
            return f"{field} does not look like English: {ascii_share:.0%} of its letters are ASCII"
    tokens = words(text)
    if len(tokens) >= 8:
        stop_share = sum(t in STOPWORDS for t in tokens) / len(tokens)
        if stop_share < 0.05:
            return f"{field} does not look like English: {stop_share:.0%} of its words are common English words"
    return None


def open_image(data: bytes | None, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image | None, list[str]]:
    """The decoded picture in 8-bit RGB (or L), or None with the reason it was refused."""
    if data is None:
        return None, ["no image"]
    if not data:
        return None, ["image is empty (0 bytes)"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
        width, height = image.size
        if width * height > max_pixels:
            return None, [f"image is {width}x{height}, over the {max_pixels} pixel limit; not decoded"]
        if min(width, height) < MIN_SIDE:
            return None, [f"image is {width}x{height}, too small to assess"]
        image.load()
        return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return None, [f"image refused as a decompression bomb: {err}"]
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, struct.error, ...) on corrupt data
        return None, [f"image does not decode: {type(err).__name__}: {err}"]


def image_array(data: bytes | None, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, list[str]]:
    """HxWx3 float32 RGB in 0-255, or None with reasons."""
    image, reasons = open_image(data, max_pixels)
    if image is None:
        return None, reasons
    return np.asarray(image.convert("RGB"), dtype=np.float32), reasons


def model_ready_image(data: bytes | None, max_pixels: int = MAX_PIXELS) -> tuple[bytes | None, list[str]]:
    """Bytes any vision backend can read: the original PNG/JPEG when it is plain RGB or grey, else a PNG of the
    converted picture; None (with reasons) when the picture is refused."""
    image, reasons = open_image(data, max_pixels)
    if image is None or data is None:
        return None, reasons
    if not reasons and image.format in ("PNG", "JPEG"):  # no reason means no conversion was needed
        return data, reasons
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), reasons


def _to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    mode = image.mode
    if mode in ("RGB", "L"):
        return image, []
    if mode.startswith("I") or mode == "F":
        # PIL's convert("RGB") clips 16-bit values to 255 (a white picture): rescale the real range instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else (1.0 if values.max() <= 1.0 else 255.0)
        converted = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif "A" in mode or "transparency" in image.info:
        rgba = image.convert("RGBA")  # transparent areas shown over white, as a viewer would
        converted = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    else:
        converted = image.convert("RGB")  # CMYK, P, 1, YCbCr, ...
    return converted, [f"image converted from mode {mode}"]
