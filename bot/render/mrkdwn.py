"""Text for Slack's mrkdwn, escaped by construction.

Everything a host says is data: rule comments, stderr, log lines, process names, SMTP
banners, certificate names. In mrkdwn `<...>` is a control sequence (`<!channel>`
notifies a whole channel, `<https://x|Approve fix here>` is a link that shows other words
than its address), so Slack asks that `&`, `<` and `>` be escaped in any text not meant as
markup, and only those three.

`Mrkdwn` is a str that already is mrkdwn. Every Block Kit helper passes its text through
`esc`, which leaves a Mrkdwn alone and escapes anything else; so markup is only what this
module or a renderer's own template made (`md`), and a host's text can never become any.

- `md(template, *args)`: our template, each argument escaped;
- `span(text)`: an inline code span: escaped, on one line, and a backtick in the text (which
  would end the span) shown as a look-alike (ˋ);
- `block(text, limit)`: a code block: escaped, a ``` in the text broken up;
- `mention(user_id)`: a mention, only of a well-formed Slack user id.
"""

from __future__ import annotations

import re

MORE = "…"
BACKTICK_LOOKALIKE = "ˋ"  # U+02CB: shows like a backtick, ends no code span
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


class Mrkdwn(str):
    """Text that is mrkdwn already (made here or by a renderer's template): never escaped again."""

    __slots__ = ()

    def __add__(self, other: str) -> Mrkdwn:
        return Mrkdwn(str.__add__(self, esc(other)))

    def join(self, parts) -> Mrkdwn:  # type: ignore[override]
        return Mrkdwn(str.join(self, (esc(p) for p in parts)))


def escape(text: str) -> str:
    """&, < and > as Slack's entities (nothing else: Slack decodes only these)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc(text: object) -> Mrkdwn:
    """`text` as mrkdwn: a Mrkdwn as it is, anything else escaped."""
    if isinstance(text, Mrkdwn):
        return text
    return Mrkdwn(escape(str(text)))


def md(template: str, *args: object, **kwargs: object) -> Mrkdwn:
    """Our own mrkdwn template (e.g. '*{}* · {}') with every argument escaped."""
    return Mrkdwn(template.format(*(esc(a) for a in args), **{k: esc(v) for k, v in kwargs.items()}))


def trim(text: str, limit: int) -> str:
    """At most `limit` characters, a cut marked with an ellipsis (Mrkdwn stays Mrkdwn and
    never ends in half an entity)."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - len(MORE), 0)] if limit > 0 else ""
    if isinstance(text, Mrkdwn):
        return Mrkdwn(_PARTIAL_ENTITY.sub("", cut) + MORE) if limit > 0 else Mrkdwn("")
    return cut + MORE if limit > 0 else ""


def span(text: str, limit: int = 200) -> Mrkdwn:
    """An inline code span of `text`: one line, escaped, no backtick that could end it."""
    flat = " ".join(str(text).split()).replace("`", BACKTICK_LOOKALIKE)
    if not flat:
        return Mrkdwn("")
    return Mrkdwn(f"`{escape(trim(flat, limit))}`")


def block(text: str, limit: int) -> Mrkdwn:
    """A code block of at most `limit` characters in all (fences included)."""
    body = str(text).replace("```", "`\u200b``").rstrip("\n") or "(no output)"
    inner = limit - 8
    if inner <= 0:
        return Mrkdwn("")
    body = escape(body)
    if len(body) > inner:
        note = f"\n{MORE} ({len(body) - inner} more characters: see Details)"
        body = _PARTIAL_ENTITY.sub("", body[: max(inner - len(note), 0)]) + note
    return Mrkdwn(f"```\n{body}\n```")


def mention(user_id: str) -> Mrkdwn:
    """<@U…> for a well-formed Slack user id; anything else is shown as escaped text."""
    return Mrkdwn(f"<@{user_id}>") if _USER_ID.fullmatch(user_id or "") else esc(user_id or "someone")
