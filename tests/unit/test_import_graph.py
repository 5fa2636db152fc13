"""The import graph of bot/, config/ and handlers/ has no cycle, hidden ones included.

Every module's AST is read whole, so an import inside a function (the usual way to hide
a cycle) counts like one at the top. Edges are between modules; importing `a.b.c` also
runs the `__init__` of the packages `a` and `a.b`, so those count too (except the
importer's own packages, which are always initialised first).
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGES = ("bot", "config", "handlers")


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imported(module: str, path: Path, modules: set[str]) -> set[str]:
    """Every module of ours that `module` imports, at any depth of its AST."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(module, path).split(".")
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
    mine = module.split(".")
    own = {".".join(mine[:i]) for i in range(1, len(mine))}
    edges = {t for t in targets if t in modules and t != module}  # what it names, always
    for target in targets:  # the packages whose __init__ importing it runs, unless ours
        parts = target.split(".")
        edges |= {p for i in range(1, len(parts))
                  if (p := ".".join(parts[:i])) in modules and p not in own and p != module}
    return edges


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    names = set(files)
    return {m: imported(m, p, names) for m, p in files.items()}


def cycle_of(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as e:
        return list(e.args[1])
    return None


def test_no_import_cycle_in_bot_config_handlers():
    graph = import_graph()
    assert len(graph) > 40 and "bot.engine" in graph and "handlers" in graph
    cycle = cycle_of(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_sees_imports_hidden_in_functions(tmp_path):
    """The detector itself: a function-level import that closes a cycle is found."""
    pkg = tmp_path / "bot"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from bot.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from bot import a\n    return a\n")
    modules = {"bot", "bot.a", "bot.b"}
    graph = {m: imported(m, pkg / (m.split(".")[1] + ".py") if "." in m else pkg / "__init__.py",
                         modules) for m in modules}
    assert graph["bot.b"] == {"bot.a"}
    assert cycle_of(graph) is not None


def test_a_package_init_counts(tmp_path):
    """handlers -> bot.slack.bot runs bot/slack/__init__, which imports bot.slack.app -> handlers."""
    files = {"handlers/__init__.py": "from bot.slack.bot import Bot\n",
             "bot/__init__.py": "", "bot/slack/__init__.py": "from bot.slack.app import build\n",
             "bot/slack/app.py": "def build():\n    import handlers\n",
             "bot/slack/bot.py": "class Bot: ...\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    names = {"handlers", "bot", "bot.slack", "bot.slack.app", "bot.slack.bot"}
    paths = {"handlers": "handlers/__init__.py", "bot": "bot/__init__.py",
             "bot.slack": "bot/slack/__init__.py", "bot.slack.app": "bot/slack/app.py",
             "bot.slack.bot": "bot/slack/bot.py"}
    graph = {m: imported(m, tmp_path / paths[m], names) for m in names}
    assert graph["handlers"] == {"bot", "bot.slack", "bot.slack.bot"}
    assert cycle_of(graph) is not None
