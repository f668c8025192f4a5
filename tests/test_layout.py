"""The layout's promises, checked on the source (ast only: nothing is imported or run).

- no function in edged/ longer than 60 lines unless a ``long:`` comment says why;
- package ``__init__.py`` files are docstrings: they re-export nothing;
- imports point one way: vision knows nothing of training, the daemon, MQTT or the
  commands; training nothing of the daemon, MQTT or the commands; the daemon nothing of
  MQTT, the commands or training; MQTT takes from the daemon only `edged.daemon.outputs`
  (the Output protocol and the values the daemon hands its outputs) and
  `edged.daemon.workers` (its network thread is supervised like every other) and
  `edged.daemon.payloads` (the JSON bodies every output shares); the web page the same,
  and nothing of MQTT (MQTT nothing of the web page);
- imports sit at the top of a module, unless a ``noqa: PLC0415`` comment says why.

Each test runs once per file, so a failure names the file and lists every offending line.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edged"
MAX_FUNCTION_LINES = 60


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _sources(sub: str = "") -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


def _ids(paths: list[Path]) -> list[str]:
    return [_rel(p) for p in paths]


@cache
def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(_source(path), filename=str(path))


@cache
def _comments(path: Path) -> dict[int, str]:
    """Line number -> the comment on that line."""
    out: dict[int, str] = {}
    tokens = tokenize.generate_tokens(io.StringIO(_source(path)).readline)
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Import:
    line: int
    module: str  # absolute, and the submodule itself for ``from package import module``
    text: str


def _imports(path: Path) -> list[Import]:
    """Every import of the module, wherever it stands (TYPE_CHECKING blocks, functions)."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    lines = _source(path).splitlines()
    out: dict[tuple[int, str], Import] = {}
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            modules = [_submodule(f"{base}.{a.name}") or base for a in node.names]
        else:
            continue
        for m in modules:
            out[node.lineno, m] = Import(node.lineno, m, lines[node.lineno - 1].strip())
    return sorted(out.values(), key=lambda i: i.line)


def _submodule(name: str) -> str | None:
    """``name`` if it is a module of this repository (``from edged.daemon import outputs``)."""
    base = ROOT / name.replace(".", "/")
    return name if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file() else None


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _offending(path: Path, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{_rel(path)}:{i.line}: {i.text}"
        for i in _imports(path)
        if any(_within(i.module, f) for f in forbidden)
        and not any(_within(i.module, a) for a in allowed)
    ]


# -- (a) short functions ------------------------------------------------------------------


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


@pytest.mark.parametrize("path", _sources(), ids=_ids(_sources()))
def test_no_function_is_longer_than_60_lines_unless_a_long_comment_says_why(path: Path):
    comments = _comments(path)
    too_long = []
    for fn in _functions(_tree(path)):
        length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
        explained = any("long:" in comments.get(n, "") for n in (fn.lineno - 1, fn.lineno))
        if length > MAX_FUNCTION_LINES and not explained:
            too_long.append(f"{_rel(path)}:{fn.lineno}: {fn.name} is {length} lines")
    assert not too_long, (
        "split these, or say why they are long in a '# long: ...' comment on the line "
        "before the def:\n" + "\n".join(too_long)
    )


# -- (b) package __init__ files -----------------------------------------------------------

INITS = sorted(PACKAGE.rglob("__init__.py"))


@pytest.mark.parametrize("path", INITS, ids=_ids(INITS))
def test_package_init_is_a_docstring_that_imports_and_re_exports_nothing(path: Path):
    tree = _tree(path)
    imports = [
        f"{_rel(path)}:{n.lineno}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    assert not imports, "a package __init__ imports nothing (import the module itself):\n" + (
        "\n".join(imports)
    )
    assert ast.get_docstring(tree), f"{_rel(path)} has no docstring saying what the package is"
    others = [
        f"{_rel(path)}:{n.lineno}"
        for n in tree.body[1:]
        if not (
            isinstance(n, ast.Assign)
            and all(
                isinstance(t, ast.Name) and t.id.startswith("__") and t.id != "__all__"
                for t in n.targets
            )
        )
    ]
    assert not others, "only the docstring (and dunders such as __version__):\n" + "\n".join(others)


# -- (c) import direction -----------------------------------------------------------------


@pytest.mark.parametrize("path", _sources("vision"), ids=_ids(_sources("vision")))
def test_vision_imports_nothing_from_the_daemon_mqtt_training_or_commands(path: Path):
    bad = _offending(
        path, ("edged.daemon", "edged.mqtt", "edged.web", "edged.training", "edged.commands")
    )
    assert not bad, "vision is pure; these imports point the wrong way:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", _sources("training"), ids=_ids(_sources("training")))
def test_training_imports_nothing_from_the_daemon_mqtt_or_commands(path: Path):
    bad = _offending(path, ("edged.daemon", "edged.mqtt", "edged.web", "edged.commands"))
    assert not bad, "training builds on vision only; these point the wrong way:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", _sources("daemon"), ids=_ids(_sources("daemon")))
def test_daemon_imports_nothing_from_mqtt_commands_or_training(path: Path):
    bad = _offending(path, ("edged.mqtt", "edged.web", "edged.commands", "edged.training"))
    assert not bad, (
        "the daemon knows outputs only through edged.daemon.outputs; these point the "
        "wrong way:\n" + "\n".join(bad)
    )


OUTPUT_ALLOWED = ("edged.daemon.outputs", "edged.daemon.workers", "edged.daemon.payloads")


@pytest.mark.parametrize("path", _sources("mqtt"), ids=_ids(_sources("mqtt")))
def test_mqtt_imports_of_the_daemon_only_its_output_protocol_and_workers(path: Path):
    bad = _offending(path, ("edged.daemon", "edged.commands", "edged.web"), allowed=OUTPUT_ALLOWED)
    assert not bad, (
        "MQTT may use edged.daemon.outputs (the protocol and its values), "
        "edged.daemon.payloads (the shared JSON bodies) and edged.daemon.workers (supervised "
        "threads), nothing else of the daemon and nothing of the commands or the web page:\n"
        + "\n".join(bad)
    )


@pytest.mark.parametrize("path", _sources("web"), ids=_ids(_sources("web")))
def test_web_imports_of_the_daemon_only_its_output_protocol_and_workers(path: Path):
    bad = _offending(path, ("edged.daemon", "edged.commands", "edged.mqtt"), allowed=OUTPUT_ALLOWED)
    assert not bad, (
        "the web page is an output like MQTT: edged.daemon.outputs, payloads and workers, "
        "nothing else of the daemon, nothing of the commands or of MQTT:\n" + "\n".join(bad)
    )


# -- (d) imports at the top ---------------------------------------------------------------


@pytest.mark.parametrize("path", _sources(), ids=_ids(_sources()))
def test_imports_sit_at_the_top_unless_marked_noqa_plc0415(path: Path):
    comments = _comments(path)
    lazy: dict[int, str] = {}  # line -> innermost function (ast.walk visits outer ones first)
    for fn in _functions(_tree(path)):
        for node in ast.walk(fn):
            if isinstance(node, ast.Import | ast.ImportFrom):
                lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
                if not any("noqa: PLC0415" in comments.get(n, "") for n in lines):
                    lazy[node.lineno] = f"{_rel(path)}:{node.lineno} (in {fn.name})"
    assert not lazy, (
        "move these imports to the top of the module, or mark a truly lazy one "
        "'# noqa: PLC0415' with the reason:\n" + "\n".join(lazy[n] for n in sorted(lazy))
    )
