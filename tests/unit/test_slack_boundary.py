"""One boundary between Slack and the fixes (issue 13, item 6), read off the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_listeners_import_only_typed_requests_and_contracts_never_the_app():
    allowed = {"re", "slack_bolt.async_app", "bot.slack.contracts", "bot.slack.requests",
               "bot.render.blockkit", "handlers"}
    for path in (ROOT / "handlers").glob("*.py"):
        assert imports(path) <= allowed, (path.name, imports(path) - allowed)


def test_fixes_return_plain_data_no_slack_markup():
    for path in (ROOT / "bot" / "fixes").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"<[@!#][^>]*>|<!subteam", text), path.name
        assert not any(m.startswith(("slack_sdk", "slack_bolt", "bot.slack", "bot.render"))
                       for m in imports(path)), path.name


def test_block_kit_is_built_only_in_bot_render():
    for path in list((ROOT / "bot").rglob("*.py")) + list((ROOT / "handlers").glob("*.py")):
        if path.parent.name == "render":
            continue
        assert "slack_sdk.models" not in " ".join(imports(path)), path
        assert '"type": "section"' not in path.read_text(), path


def test_no_test_fake_in_production_code_and_one_fix_button_module():
    production = "\n".join(p.read_text() for d in ("bot", "handlers", "config") for p in (ROOT / d).rglob("*.py"))
    assert "InMemoryFixService" not in production and "class Recording" not in production
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "bot" / "slack").rglob("*.py")
             if re.search(r"\.(apply|rollback)\(\w+\.value, Actor", p.read_text())]
    assert users == ["bot/slack/fix_buttons.py"]
    assert "SlackPoster(" not in (ROOT / "bot/slack/fix_buttons.py").read_text()  # the app's poster
