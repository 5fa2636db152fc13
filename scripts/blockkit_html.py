"""Block Kit -> HTML, close enough to Slack to review a message by looking at it.

    .venv/bin/python -m scripts.blockkit_html [OUT.html]
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size=830,700 \
        --screenshot=docs/guide-case-1.png docs/guide-case-1.html

renders the message mailcheck posts for the guide's first case (the real engine on the
recorded host, tests/guide_case.py, with the outside probes waiting 4 s as a filtered port
makes them) and the confirm dialog of its fix button to OUT.html (default
docs/guide-case-1.html, not kept in git: the picture is); headless Chromium (Debian's `chromium` package, a tool for this
picture only, not one the lab or CI runs; the flags are those known to work on these
machines: no sandbox as root, no GPU, no background networking) takes the picture.

Handles what mailcheck sends: header, section (mrkdwn text, fields, a button accessory),
context, actions, divider; mrkdwn bold, italic, strike, code spans and blocks, mentions,
links and the emoji codes mailcheck uses. mrkdwn arrives escaped (&amp; &lt; &gt;), which is
already HTML; plain text is escaped here.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
from pathlib import Path

EMOJI = {  # shortcode -> (character, colour): DejaVu has these glyphs, no emoji font needed
    "x": ("✖", "#e01e5a"), "white_check_mark": ("✔", "#2eb67d"), "warning": ("⚠", "#ecb22e"),
    "boom": ("✸", "#e01e5a"), "grey_question": ("?", "#868686"), "information_source": ("ℹ", "#1d9bd1"),
    "rotating_light": ("⚑", "#e01e5a"), "hourglass_flowing_sand": ("⧗", "#868686"),
    "arrows_counterclockwise": ("↻", "#1d9bd1"), "white_circle": ("○", "#868686"),
    "fast_forward": ("»", "#868686"), "wrench": ("⚒", "#616061"),
}
CSS = """
body { font: 15px/1.46 'DejaVu Sans', 'Liberation Sans', sans-serif; color: #1d1c1d;
       background: #fff; margin: 0; padding: 20px 24px; width: 780px; }
.msg { display: flex; gap: 10px; }
.avatar { width: 36px; height: 36px; border-radius: 6px; background: #2c3e50; color: #fff;
          font-weight: bold; display: flex; align-items: center; justify-content: center; }
.name { font-weight: 900; } .app { font-size: 11px; background: #e8e8e8; color: #616061;
        padding: 1px 4px; border-radius: 3px; margin-left: 4px; } .time { color: #616061; font-size: 12px; }
.blocks { flex: 1; } .block { margin: 4px 0 8px; }
.header { font-size: 18px; font-weight: 900; margin-top: 2px; }
.context { color: #616061; font-size: 13px; }
.section { display: flex; gap: 12px; align-items: flex-start; } .section .text { flex: 1; }
.fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 16px; }
code { font: 12px 'DejaVu Sans Mono', monospace; color: #e01e5a; background: #f6f6f6;
       border: 1px solid #e1e1e1; border-radius: 3px; padding: 1px 3px; word-break: break-all; }
pre { font: 12px 'DejaVu Sans Mono', monospace; background: #f6f6f6; border: 1px solid #e1e1e1;
      border-radius: 4px; padding: 8px; white-space: pre-wrap; }
.button { display: inline-block; border: 1px solid #bbb; border-radius: 4px; padding: 4px 12px;
          font-weight: bold; font-size: 14px; margin: 2px 6px 2px 0; white-space: nowrap; background: #fff; }
.primary { background: #007a5a; border-color: #007a5a; color: #fff; }
.danger { background: #e01e5a; border-color: #e01e5a; color: #fff; }
.mention { background: #e8f5fa; color: #1264a3; border-radius: 3px; padding: 0 2px; }
.dialog { margin: 24px 0 0 46px; width: 520px; border: 1px solid #ddd; border-radius: 8px;
          box-shadow: 0 4px 14px rgba(0,0,0,.15); padding: 16px 20px; }
.dialog h3 { margin: 0 0 10px; font-size: 18px; } .dialog .body { white-space: pre-wrap; font-size: 14px; }
.dialog .buttons { text-align: right; margin-top: 14px; }
.caption { color: #616061; font-size: 12px; margin: 18px 0 4px 46px; }
"""


def emoji(name: str) -> str:
    char, colour = EMOJI.get(name, ("◆", "#868686"))
    return f'<span style="color:{colour};font-weight:bold">{char}</span>'


def _inline(text: str) -> str:
    """Inline mrkdwn of one line (no code) -> HTML."""
    text = re.sub(r"&lt;|&gt;|&amp;", lambda m: m.group(), text)  # already entities: keep
    text = re.sub(r"<@([A-Z0-9]+)>", r'<span class="mention">@\1</span>', text)
    text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r'<a href="\1">\2</a>', text)
    text = re.sub(r":([a-z0-9_+-]+):", lambda m: emoji(m.group(1)), text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<b>\1</b>", text)
    text = re.sub(r"(?<![\w])_([^_\n]+)_(?![\w])", r"<i>\1</i>", text)
    return re.sub(r"(?<![\w])~([^~\n]+)~(?![\w])", r"<s>\1</s>", text)


def mrkdwn(text: str) -> str:
    """Slack mrkdwn (its &, <, > already entities) -> HTML."""
    out = []
    for i, part in enumerate(re.split(r"```\n?(.*?)\n?```", text, flags=re.S)):
        if i % 2:
            out.append(f"<pre>{part}</pre>")
            continue
        spans = re.split(r"`([^`\n]*)`", part)
        out.append("".join(f"<code>{s}</code>" if j % 2 else _inline(s) for j, s in enumerate(spans)))
    return "".join(out).replace("\n", "<br>")


def text_of(obj: dict) -> str:
    if obj.get("type") == "mrkdwn":
        return mrkdwn(obj["text"])
    return re.sub(r":([a-z0-9_+-]+):", lambda m: emoji(m.group(1)), html.escape(obj["text"]))


def button(el: dict) -> str:
    return f'<span class="button {el.get("style", "")}">{text_of(el["text"])}</span>'


def block(b: dict) -> str:
    kind = b["type"]
    if kind == "header":
        return f'<div class="block header">{text_of(b["text"])}</div>'
    if kind == "context":
        return f'<div class="block context">{" ".join(text_of(e) for e in b["elements"])}</div>'
    if kind == "actions":
        return f'<div class="block">{"".join(button(e) for e in b["elements"])}</div>'
    if kind == "divider":
        return '<hr class="block">'
    if kind == "section" and b.get("fields"):
        cells = "".join(f"<div>{text_of(f)}</div>" for f in b["fields"])
        return f'<div class="block fields">{cells}</div>'
    if kind == "section":
        side = button(b["accessory"]) if (b.get("accessory") or {}).get("type") == "button" else ""
        return f'<div class="block section"><div class="text">{text_of(b["text"])}</div>{side}</div>'
    return f'<div class="block"><i>({html.escape(kind)} block)</i></div>'


def confirm_dialog(el: dict) -> str:
    c = el["confirm"]
    return (f'<div class="caption">After a click on “{html.escape(el["text"]["text"])}”: the confirm '
            f'dialog</div><div class="dialog"><h3>{text_of(c["title"])}</h3>'
            f'<div class="body">{text_of(c["text"])}</div><div class="buttons">'
            f'<span class="button">{text_of(c["deny"])}</span>'
            f'<span class="button {c.get("style", "primary")}">{text_of(c["confirm"])}</span></div></div>')


def page(blocks: list[dict], time_text: str = "21:32") -> str:
    confirms = [b["accessory"] for b in blocks if (b.get("accessory") or {}).get("confirm")]
    return (f"<!doctype html><meta charset='utf-8'><style>{CSS}</style><div class='msg'>"
            f"<div class='avatar'>mc</div><div class='blocks'><div><span class='name'>mailcheck</span>"
            f"<span class='app'>APP</span> <span class='time'>{time_text}</span></div>"
            + "".join(block(b) for b in blocks) + "</div></div>"
            + "".join(confirm_dialog(c) for c in confirms[:1]))


async def guide_case_blocks() -> list[dict]:
    from bot.render.report import report_blocks
    from tests import guide_case

    report = await guide_case.report(probe_delay=4.0)
    return report_blocks(report, {f.id: "p_plan" for f in report.fixes}, "r_report")


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/guide-case-1.html")
    blocks = asyncio.run(guide_case_blocks())
    out.write_text(page(blocks))
    print(f"{out} ({len(blocks)} blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
