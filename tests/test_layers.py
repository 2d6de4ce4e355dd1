"""The folder listing tells the flow, and imports only point down it.

Each module belongs to one layer; a module may import from its own layer or from layers below it, never
from a layer above (the Slack side does not reach into handlers, storage knows nothing of bot). A new
module or sub-package must be placed in LAYERS, which is the point: its place in the flow is a decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("bot", "handlers", "storage")

# Lowest first. A name stands for the module and everything under it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("storage", ("mentiondesk.storage",)),
    (
        "core",
        (
            "mentiondesk.bot",
            "mentiondesk.bot.config",
            # The [classifier.priority] and [[classifier.categories]] settings, read by the config.
            "mentiondesk.bot.cue_settings",
            "mentiondesk.bot.logs",
            "mentiondesk.bot.events",
            # Imports nothing of mentiondesk: every layer above storage may count.
            "mentiondesk.bot.metrics",
            "mentiondesk.bot.retry",
            "mentiondesk.bot.dispatch",
            "mentiondesk.bot.routing",
            "mentiondesk.bot.ingest",
            "mentiondesk.bot.reload",
            "mentiondesk.bot.systemd",
            # Pure, and read by the config; the rest of mentiondesk.bot.sla is the "sla side" below.
            "mentiondesk.bot.sla.calendar",
            "mentiondesk.bot.sla.policy",
        ),
    ),
    ("mastodon side", ("mentiondesk.bot.mastodon",)),
    ("classify side", ("mentiondesk.bot.classify",)),
    ("handler context", ("mentiondesk.bot.context",)),
    ("sla side", ("mentiondesk.bot.sla",)),
    # Retention and `forget`: close tickets (SLA clocks) and erase them (storage).
    ("data lifecycle", ("mentiondesk.bot.erasure",)),
    ("slack side", ("mentiondesk.bot.slack",)),
    ("reports", ("mentiondesk.bot.reports",)),
    ("web", ("mentiondesk.bot.web",)),
    ("reply path", ("mentiondesk.bot.replies",)),
    ("handlers", ("mentiondesk.handlers",)),
    (
        "entry points",
        (
            "mentiondesk.bot.daemon",
            "mentiondesk.bot.check",
            "mentiondesk.bot.demo",
            "mentiondesk.bot.cli",
            "mentiondesk.bot.__main__",
        ),
    ),
]


def layer_of(module: str) -> int | None:
    """The layer whose longest matching name covers the module."""
    matches = [
        (len(name), index)
        for index, (_, names) in enumerate(LAYERS)
        for name in names
        if module == name or module.startswith(name + ".")
    ]
    return max(matches)[1] if matches else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["mentiondesk", *parts])


def source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py") if "migrations" not in p.parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` may name a submodule: judge by the most specific name.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [module_name(p) for p in source_files() if layer_of(module_name(p)) is None]
    assert not unplaced, f"place these modules in tests/test_layers.py LAYERS: {unplaced}"


def test_the_package_is_imported_under_its_one_name() -> None:
    bare = [
        f"{p.relative_to(REPO)}:{line} imports {name}"
        for p in source_files() + sorted((REPO / "tests").rglob("*.py"))
        for line, name in imports_of(p)
        if name.split(".")[0] in SOURCE_DIRS
    ]
    assert not bare, "import through mentiondesk.*, as installed:\n" + "\n".join(bare)


def test_no_import_climbs_to_a_higher_layer() -> None:
    climbs = []
    for path in source_files():
        own = layer_of(module_name(path))
        assert own is not None
        for line, name in imports_of(path):
            target = layer_of(name)
            if target is not None and target > own:
                climbs.append(
                    f"{path.relative_to(REPO)}:{line} ({LAYERS[own][0]}) imports {name} ({LAYERS[target][0]})"
                )
    assert not climbs, "imports that climb up the flow:\n" + "\n".join(climbs)


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("mentiondesk.storage.db", "storage"),
        ("mentiondesk.bot.slack.sender", "slack side"),
        ("mentiondesk.bot.mastodon.watcher", "mastodon side"),
        ("mentiondesk.handlers.mention", "handlers"),
        ("mentiondesk.bot.daemon", "entry points"),
        ("mentiondesk.bot", "core"),
    ],
)
def test_layer_lookup_takes_the_most_specific_name(module: str, layer: str) -> None:
    index = layer_of(module)
    assert index is not None and LAYERS[index][0] == layer
