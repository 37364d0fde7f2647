"""The layers stay apart: imports point downward only, without cycles, and what must stay
light does not import the heavy parts.

The floors, top to bottom (a module may import from its own floor or any floor below):
the launcher, the cogs, the Discord client, the Discord UI (`bot.ui`), the use cases
(`bot.writing`, and the training that writes with them), the services, and at the bottom the
store, generation, prompts, config and the adapters' data and serving (`bot.learning`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FLOORS: list[tuple[str, ...]] = [
    ("bot.__main__", "bot.playground", "emulator", "tools"),
    ("cogs",),
    ("bot.app",),
    ("bot.ui",),
    # training judges an adapter by writing poems with it, as the use cases do
    ("bot.writing", "bot.learning.train", "bot.learning.evaluate"),
    ("bot.services", "bot.limits", "bot.preferences"),
    (
        "bot.store",
        "bot.generation",
        "bot.images",
        "bot.prompts",
        "bot.config",
        "bot.logs",
        "migrations",
        "bot",
    ),
]


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter at the repo root; its stdout, stripped."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def modules() -> dict[str, Path]:
    """Every module of the project (tests aside), by dotted name."""
    found: dict[str, Path] = {}
    for top in ("bot", "cogs", "emulator", "migrations", "tools"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def floor(module: str) -> int:
    """The floor of `module`: the one whose longest prefix names it."""
    best, depth = len(FLOORS) - 1, -1
    for index, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = index, name.count(".")
    return best


def _deferred(node: ast.AST) -> bool:
    """Imports under `node` do not run when the module loads: a function body, or a block
    for type checkers only."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return True
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: dict[str, Path]) -> set[tuple[str, bool]]:
    """The project modules `name` imports, each with whether the import runs when it is loaded
    (False: inside a function, or only for type checking)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, at_load: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _deferred(child):
                visit(child, False)
            elif isinstance(child, ast.Import):
                found.update((a.name, at_load) for a in child.names if a.name in known)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                for alias in child.names:
                    target = f"{base}.{alias.name}"  # `from bot.writing import refine`
                    target = target if target in known else base
                    if target in known:
                        found.add((target, at_load))
            else:
                visit(child, at_load)

    visit(tree, True)
    return found


def test_imports_point_downward_only() -> None:
    known = modules()
    upward = [
        f"{name} imports {target}"
        for name, path in known.items()
        for target, _ in imports(name, path, known)
        if floor(target) < floor(name)
    ]
    assert upward == []
    # the use cases and everything below them know nothing of Discord
    below_ui = [n for n in known if floor(n) > floor("bot.ui")]
    discord_users = [n for n in below_ui if "import discord" in known[n].read_text()]
    assert discord_users == []


def test_no_import_cycles() -> None:
    known = modules()
    graph = {
        name: {t for t, at_load in imports(name, path, known) if at_load and t != name}
        for name, path in known.items()
    }
    done: set[str] = set()
    cycles: list[list[str]] = []

    def walk(name: str, trail: list[str]) -> None:
        if name in trail:
            cycles.append([*trail[trail.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph.get(name, ())):
            walk(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        walk(name, [])
    assert cycles == []


def test_the_floors_are_what_the_layering_says() -> None:
    # the check itself: an upward import is seen (so the test above can fail)
    assert floor("bot.ui.deliver") < floor("bot.writing.run") < floor("bot.store.database")
    assert floor("cogs.refine") < floor("bot.app") < floor("bot.ui")
    known = modules()
    assert ("bot.writing.refine", True) in imports("cogs.refine", known["cogs.refine"], known)
    assert ("bot.app", False) in imports("cogs.story", known["cogs.story"], known)


def test_prompts_queue_and_remote_engine_load_without_torch() -> None:
    code = (
        "import sys, bot.prompts, bot.generation.types, bot.generation.queue,"
        " bot.generation.remote, bot.preferences, bot.limits;"
        " print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    assert run_python(code) == "[]"


def test_the_use_cases_load_without_discord_or_torch() -> None:
    code = (
        "import sys, bot.writing.run, bot.writing.tasks, bot.writing.refine, bot.writing.story;"
        " print(sorted(m for m in ('discord', 'torch') if m in sys.modules))"
    )
    assert run_python(code) == "[]"
