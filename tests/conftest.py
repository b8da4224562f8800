"""Shared fixtures. Tests run offline: real tiny models built here, never a download from a model hub."""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# The seed projects' data (InterSyn's lists, InterMT's human scores) beside the repo, as CI has it.
SHARED_DATA = Path(os.environ.get("SEIR_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def shared_file(*parts: str) -> Path:
    """A file of the shared data; the test is skipped, saying where it looked, when that data is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not found: put the shared data beside the repo or set SEIR_SHARED_DATA")
    return path


# vLLM's CPU build in an environment of its own (`make vllm-env`), for the tests that run a real engine.
VLLM_PYTHON = Path(os.environ.get("SEIR_VLLM_PYTHON") or Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin"
                   / "python")


ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache: vLLM's CPU default (4) is more than tests need


def vllm_python() -> str:
    """The engine environment's interpreter; the test is skipped, saying how to make it, when there is none."""
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"{VLLM_PYTHON} not found: run `make vllm-env` (or set SEIR_VLLM_PYTHON) for the engine tests")
    return str(VLLM_PYTHON)


# Before any test imports transformers or huggingface_hub, which read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def seir_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh SEIR_HOME per session, so `tiny:NAME` models resolve to this session's builds, in this process and
    in every Ray worker started after it."""
    home = tmp_path_factory.mktemp("seir-home")
    os.environ["SEIR_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_models(seir_home: Path) -> dict[str, Path]:
    """Every tiny model (llm, judge, sd, clip, llm-wide-heads), built once per test session: name -> folder."""
    import torch

    from seir.operators.backends.tiny import TINY_NAMES, build_tiny_models

    torch.set_num_threads(min(2, torch.get_num_threads()))  # keep the suite polite on small CI machines
    return build_tiny_models(seir_home / "models", TINY_NAMES)


@pytest.fixture(scope="session")
def tiny_families(seir_home: Path) -> dict[str, Path]:
    """The tiny models of the families users run (Qwen2.5-VL, Gemma 3, Qwen3, ...), built once per session."""
    from seir.operators.backends.tiny import FAMILY_NAMES, build_tiny_models

    return build_tiny_models(seir_home / "models", FAMILY_NAMES)


@pytest.fixture(scope="session")
def tiny_pictures(seir_home: Path) -> dict[str, Path]:
    """The tiny picture families (SDXL, SD3, FLUX.1, Qwen-Image and their edit models), built once per session."""
    from seir.operators.backends.tiny import PICTURE_NAMES, build_tiny_models

    return build_tiny_models(seir_home / "models", PICTURE_NAMES)


# Test tiers. `make test` runs everything; `make test-fast` (`pytest --fast`) leaves out the tests marked with one of
# these (pyproject.toml declares them), and refuses, loudly, what they start (see GUARD below).
SLOW_KINDS = ("ray", "engine", "server", "browser", "slow")

# What starts something slow, in the source of a test, of any fixture it uses (at any depth: `finished` uses
# `ray_local`) or of any function or class under tests/ that these call, at any depth (`run_job`, `seir_run`).
# Whatever this misses, the fast tier's guard catches: then mark the test by hand.
JOB_COMMANDS = r"(run|refresh|rescore|dedup|judge-eval)"
STARTS = {
    "ray": re.compile(r"\bray\.init\(|\bstart_local_ray\(|\bCluster\(|[\"']start[\"'],\s*[\"']--head\b"
                      r"|\bRunner\(.*\)\.run\(|\bmain\(\[\s*[\"']" + JOB_COMMANDS + r"[\"']"
                      r"|[\"']seir\.engine\.cli[\"'],\s*[\"']" + JOB_COMMANDS + r"[\"']"),
    "engine": re.compile(r"\bvllm_python\("),
    "server": re.compile(r"\bOpenAIServer\(|\btransformers_serve\("),
    "browser": re.compile(r"\bsync_playwright\(|\bchromium\.launch\("),
}
CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
TESTS = Path(__file__).resolve().parent
_kinds: dict[object, frozenset[str]] = {}


def _starts(func: object) -> frozenset[str]:
    """The slow kinds a test, fixture, helper function or class defined under tests/ starts, read from its source
    and, through the names it calls, from the sources of the helpers it calls."""
    if func in _kinds:
        return _kinds[func]
    _kinds[func] = frozenset()  # while it is read: a helper that calls itself, or one that calls it back
    try:
        if not Path(inspect.getsourcefile(func) or "").resolve().is_relative_to(TESTS):  # type: ignore[arg-type]
            return frozenset()
        source = inspect.getsource(func)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return frozenset()
    names = vars(sys.modules[func.__module__]) if func.__module__ in sys.modules else {}  # type: ignore[attr-defined]
    kinds = {kind for kind, pattern in STARTS.items() if pattern.search(source)}
    for called in set(CALLED.findall(source)):
        helper = names.get(called)
        if helper is not func and (inspect.isfunction(helper) or inspect.isclass(helper)):
            kinds |= _starts(helper)
    _kinds[func] = frozenset(kinds)
    return _kinds[func]


def slow_kinds_of(item: pytest.Item) -> set[str]:
    info = getattr(item, "_fixtureinfo", None)
    funcs = [getattr(item, "function", None)] + [
        fixturedef.func for name in getattr(item, "fixturenames", ())
        for fixturedef in (info.name2fixturedefs.get(name, ()) if info else ())]
    return {kind for func in funcs if func is not None for kind in _starts(func)}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="the fast tier: leave out the tests marked " + ", ".join(SLOW_KINDS) + ", and fail any "
                          "other test that starts Ray, a model server, an engine or a browser")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for kind in sorted(slow_kinds_of(item)):
            item.add_marker(kind)
    if config.getoption("fast"):
        slow = [item for item in items if any(item.get_closest_marker(kind) for kind in SLOW_KINDS)]
        if slow:
            config.hook.pytest_deselected(items=slow)
            left = set(map(id, slow))
            items[:] = [item for item in items if id(item) not in left]


def kinds_left_out(markexpr: str) -> set[str]:
    """The slow kinds a `-m` expression leaves out whatever other markers a test has: `not ray` leaves out `ray`,
    `not slow` leaves out none of the kinds the guard knows, and `matrix` none (a matrix test may start Ray)."""
    from _pytest.mark.expression import Expression

    if not markexpr.strip():  # no -m: every test runs (an empty expression would select none)
        return set()
    try:
        expression = Expression.compile(markexpr)
    except Exception:  # pytest reports a bad expression itself
        return set()

    def selects(markers: set[str]) -> bool:
        return expression.evaluate(lambda name, /, **_: name in markers)

    named = set(re.findall(r"\w+", markexpr)) - {"and", "or", "not"}  # a test may carry them too (`-m matrix`)
    left_out = set()
    for kind in STARTS:
        others = sorted({*SLOW_KINDS, *named} - {kind})
        combos = itertools.chain.from_iterable(itertools.combinations(others, n) for n in range(len(others) + 1))
        if not any(selects({kind, *combo}) for combo in combos):
            left_out.add(kind)
    return left_out


# The fast tier's guard, as a sitecustomize.py on PYTHONPATH: it runs in this process and in every Python process a
# test starts (a `seir run` in a subprocess starts Ray too). It raises a BaseException, which no `except Exception`
# in the code under test swallows, where a test starts something of a kind in SEIR_TEST_REFUSE.
GUARD = r"""
import importlib.machinery
import os
import sys

REFUSED = set(filter(None, os.environ.get("SEIR_TEST_REFUSE", "").split(",")))


class SlowTestInFastTier(BaseException):
    pass


def refuse(original, kind_of, what):
    def guarded(*args, **kwargs):
        kind = kind_of(args)
        if kind in REFUSED:
            raise SlowTestInFastTier(
                f"{what} in the fast test tier, which leaves out slow tests: mark this test "
                f"`@pytest.mark.{kind}` (or its module `pytestmark = pytest.mark.{kind}`); `make test` runs it")
        return original(*args, **kwargs)
    guarded.seir_fast_tier_guard = True
    return guarded


def engine_or_server(args):
    return "engine" if getattr(args[0], "engine", "") in ("vllm", "sglang") else "server"


# module -> (attribute, the marker it needs, what it does). A renamed target is no longer guarded: keep these current.
TARGETS = {
    "ray": [("init", lambda args: "ray", "ray.init() starts or joins Ray")],
    "ray.cluster_utils": [("Cluster.__init__", lambda args: "ray", "ray.cluster_utils.Cluster starts Ray")],
    "seir.operators.backends.engines": [("EngineServer.start", engine_or_server, "a model server process started")],
    "tests.support.openai_server": [("OpenAIServer.__init__", lambda args: "server", "OpenAIServer loads models")],
    "playwright.sync_api": [("sync_playwright", lambda args: "browser", "playwright drives a browser")],
    "playwright.async_api": [("async_playwright", lambda args: "browser", "playwright drives a browser")],
}


def patch(module):
    for attribute, kind_of, what in TARGETS[module.__name__]:
        *path, name = attribute.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        if not hasattr(getattr(owner, name), "seir_fast_tier_guard"):
            setattr(owner, name, refuse(getattr(owner, name), kind_of, what))


class Finder:
    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)
            spec.loader.exec_module = exec_module
        return spec


if REFUSED:
    for loaded in TARGETS.keys() & sys.modules.keys():
        patch(sys.modules[loaded])
    sys.meta_path.insert(0, Finder())
"""


def pytest_configure(config: pytest.Config) -> None:
    refused = set(STARTS) if config.getoption("fast") else kinds_left_out(config.option.markexpr or "")
    if not refused:
        return
    folder = Path(tempfile.mkdtemp(prefix="seir-fast-tier-"))
    (folder / "sitecustomize.py").write_text(GUARD)
    os.environ["SEIR_TEST_REFUSE"] = ",".join(sorted(refused))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    spec = importlib.util.spec_from_file_location("seir_fast_tier_guard", folder / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    config.stash[GUARD_FOLDER] = folder
    config.stash[REFUSED] = refused


GUARD_FOLDER = pytest.StashKey[Path]()
REFUSED = pytest.StashKey[set[str]]()


def pytest_report_header(config: pytest.Config) -> str | None:
    refused = config.stash.get(REFUSED, set())
    return f"fast tier: a test that starts {', '.join(sorted(refused))} fails, naming its marker" if refused else None


def pytest_unconfigure(config: pytest.Config) -> None:
    if GUARD_FOLDER in config.stash:
        shutil.rmtree(config.stash[GUARD_FOLDER], ignore_errors=True)
