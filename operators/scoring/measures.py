"""Shared math of the scorers and of judge evaluation: 0-5 curves, text statistics, no-reference image metrics and
rank correlations. numpy only, so it runs anywhere an operator does."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

# Common English function words: the language heuristic counts them, redundancy ignores them.
STOPWORDS = frozenset(
    {
        "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as",
        "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "there",
        "here", "i", "you", "he", "she", "we", "they", "them", "his", "her", "their", "our", "your", "my", "me", "us",
        "not", "no", "do", "does", "did", "have", "has", "had", "will", "would", "can", "could", "should", "may",
        "might", "so", "than", "then", "too", "very", "what", "which", "who", "whom", "how", "when", "where", "why",
        "all", "any", "each", "into", "about", "over", "under", "up", "down", "out", "more", "most", "some", "such",
        "only", "own", "same", "just", "also"
    }
)


# --- curves onto 0-5 ------------------------------------------------------------------------------------------


def ramp(value: float, zero_at: float, five_at: float) -> float:
    """Linear from 0 at ``zero_at`` to 5 at ``five_at`` and flat beyond both; ``zero_at > five_at`` makes it
    decreasing (for defects: more is worse)."""
    share = (value - zero_at) / (five_at - zero_at)
    return 5.0 * min(1.0, max(0.0, share))


def log_ramp(value: float, zero_at: float, five_at: float) -> float:
    """``ramp`` on log10 of the value: for quantities that span orders of magnitude (variance of the Laplacian)."""
    return ramp(math.log10(max(value, 1e-12)), math.log10(zero_at), math.log10(five_at))


def length_score(words: int, limit: int) -> float:
    """5 within the limit, falling linearly to 0 at twice the limit."""
    return 5.0 if words <= limit else ramp(words, 2 * limit, limit)


# --- text -----------------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:'[^\W_]+)?", text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS}


def repeated_ngram_share(tokens: Sequence[str], n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier one: 0 for fresh text, near 1 for a loop."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def containment(part: set[str], whole: set[str]) -> float:
    """Share of ``part`` that also occurs in ``whole`` (0 when ``part`` is empty)."""
    return len(part & whole) / len(part) if part else 0.0


def redundancy(overlap: float, text_cosine: float | None = None) -> float:
    """How much a caption restates an answer, 0-1: the larger of the share of its content words found in the
    answer (0 at 0.4, 1 at 0.9: captions on the same topic share some words) and the embedding cosine of the two
    texts (0 at 0.5, 1 at 0.9), when one is given."""
    by_words = ramp(overlap, 0.4, 0.9) / 5
    return by_words if text_cosine is None else max(by_words, ramp(text_cosine, 0.5, 0.9) / 5)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    u, v = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norm = float(np.linalg.norm(u) * np.linalg.norm(v))
    return float(u @ v) / norm if norm > 0 else 0.0


# --- images (gray: float32 luminance 0-255; rgb: float32 HxWx3 0-255) ------------------------------------------


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: falls as edges blur (noise raises it too; see immerkaer_sigma)."""
    g = gray
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def clipped_share(gray: np.ndarray, shadow: float = 4.0, highlight: float = 251.0) -> float:
    """Share of pixels crushed to black or blown to white."""
    return float(np.mean((gray <= shadow) | (gray >= highlight)))


def rms_contrast(gray: np.ndarray) -> float:
    """Standard deviation of luminance scaled to 0-1."""
    return float(gray.std() / 255.0)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Süsstrunk (2003): spread plus 0.3 x mean of the opponent channels R-G and (R+G)/2-B.
    About 15 is slightly colourful, 33 moderately, 59 quite, 82 highly; greyscale is 0."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def immerkaer_sigma(gray: np.ndarray) -> float:
    """Immerkær (1996) fast noise estimate: the mean absolute response to [[1,-2,1],[-2,4,-2],[1,-2,1]] (a
    difference of two Laplacians that cancels smooth structure), scaled to the standard deviation of Gaussian
    noise. Fine texture reads as some noise, so compare copies of one picture rather than unrelated pictures."""
    height, width = gray.shape
    d = gray[:, :-2] - 2.0 * gray[:, 1:-1] + gray[:, 2:]  # the kernel is separable: [1,-2,1] by rows, then columns
    d = d[:-2] - 2.0 * d[1:-1] + d[2:]
    return float(math.sqrt(math.pi / 2.0) * np.abs(d).sum() / (6.0 * (width - 2) * (height - 2)))


def blockiness(gray: np.ndarray, block: int = 8) -> float:
    """Mean absolute step across block boundaries over the mean step inside blocks, both directions: about 1 for
    a clean picture, well above 1 when JPEG quantisation left an 8x8 grid."""
    steps_x, steps_y = np.abs(np.diff(gray, axis=1)), np.abs(np.diff(gray, axis=0))
    on_x = np.arange(steps_x.shape[1]) % block == block - 1  # the step between column 8k-1 and 8k
    on_y = np.arange(steps_y.shape[0]) % block == block - 1
    across = steps_x[:, on_x].sum() + steps_y[on_y].sum()
    inside = steps_x[:, ~on_x].sum() + steps_y[~on_y].sum()
    n_across = steps_x[:, on_x].size + steps_y[on_y].size
    n_inside = steps_x[:, ~on_x].size + steps_y[~on_y].size
    if not n_across or not n_inside:  # smaller than one block: no evidence either way
        return 1.0
    return float((across / n_across) / max(inside / n_inside, 1e-6))


def structural_similarity(x: np.ndarray, y: np.ndarray, window: int = 7) -> float:
    """Mean SSIM (Wang et al. 2004) of two grey pictures of one size in 0-255, over uniform ``window`` squares:
    1 for the same picture; near 0 for unrelated ones, whatever their colours."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = min(window, *x.shape)

    def local_mean(a: np.ndarray) -> np.ndarray:
        return np.lib.stride_tricks.sliding_window_view(a, (window, window)).mean(axis=(-2, -1))

    mx, my = local_mean(x), local_mean(y)
    vx, vy, cov = local_mean(x * x) - mx * mx, local_mean(y * y) - my * my, local_mean(x * y) - mx * my
    ssim = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim.mean())


# --- agreement with humans ------------------------------------------------------------------------------------


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0  # mean of ranks start+1 .. end
            start = end
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """None when undefined (fewer than two points, or either side constant)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2:
        return None
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else None


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of average ranks, so ties are handled as scipy.stats.spearmanr does."""
    return pearson(average_ranks(x), average_ranks(y))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties on either side corrected for, as scipy.stats.kendalltau's default); None when undefined.
    Pairs are counted row by row, so memory stays linear in the number of points."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    score = untied_x = untied_y = 0
    for i in range(len(a) - 1):
        da, db = np.sign(a[i + 1 :] - a[i]), np.sign(b[i + 1 :] - b[i])
        score += int((da * db).sum())
        untied_x += int(np.count_nonzero(da))
        untied_y += int(np.count_nonzero(db))
    return score / math.sqrt(untied_x * untied_y) if untied_x and untied_y else None


def fisher_interval(r: float | None, n: int, variance: float, z: float = 1.959964) -> tuple[float, float] | None:
    """A 95% interval for a rank correlation by Fisher's z, with the variance of its z for ``n`` points
    (Fieller, Hartley and Pearson: 1.06 / (n - 3) for Spearman's rho, 0.437 / (n - 4) for Kendall's tau)."""
    if r is None or variance <= 0 or not math.isfinite(variance):
        return None
    centre, half = math.atanh(max(-0.999999, min(0.999999, r))), z * math.sqrt(variance)
    return math.tanh(centre - half), math.tanh(centre + half)


def wilson_interval(successes: float, trials: int, z: float = 1.959964) -> tuple[float, float] | None:
    """A 95% Wilson score interval for a share of ``trials``."""
    if trials <= 0:
        return None
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
