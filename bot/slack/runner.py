"""One check, from the first channel message to the final report.

Post one message (chat.postMessage), update it in place as steps finish
(chat.update, paced), end it as the report or as an error that says which
step failed and why: never left on "running", also on a crash, a timeout or a
shutdown. Where the bot is not in the channel, fall back to the response_url
and tell the user how to invite it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError

from bot.checks.registry import DOMAIN_STEPS, STEPS
from bot.engine import Checker, Progress
from bot.errors import MailcheckError, TransportError
from bot.models import Actor, Report, StepResult
from bot.render import report as render
from bot.render.mrkdwn import esc, md, trim
from bot.slack.contracts import Fixes
from bot.slack.poster import NOT_IN_CHANNEL, LiveMessage, ResponseUrlMessage, SlackPoster
from bot.store import ReportRecord, Store
from config.inventory import Host

log = logging.getLogger(__name__)

INVITE_HINT = (
    ":information_source: I can't post in this channel because I'm not a member "
    "(`{error}`). I'll send the result here when the check ends, without live progress. "
    "To get live progress, invite me: type `/invite @mailcheck` in the channel "
    "(or open the channel details → Integrations → Add apps)."
)


@dataclass(frozen=True)
class CheckRequest:
    """Check `host` for `user_id` and post in `channel_id` (a user id: in their direct message
    with the app), in the thread `thread_ts` when given. `host` None: the mail domain `domain`
    alone (`/mailcheck dns DOMAIN`)."""

    host: Host | None
    user_id: str
    channel_id: str
    response_url: str = ""
    steps: tuple[str, ...] | None = None
    thread_ts: str = ""
    domain: str | None = None

    @property
    def name(self) -> str:
        """The host's inventory name, or 'dns DOMAIN' (no inventory name has a space: the
        Re-check button of a domain's report carries this, and runs the domain again)."""
        return self.host.name if self.host is not None else f"dns {self.domain}"

    def run(self, engine: Checker, progress: Progress) -> Coroutine:
        if self.host is None:
            return engine.check_domain(self.domain, progress=progress)
        return engine.check(self.host, steps=self.steps, progress=progress)


def with_changes_in_evidence(report: Report) -> Report:
    """The findings' zone lines and advice appended to their evidence, which the Slack
    report's Details show (until its rendering shows Finding.records and .advice itself)."""
    findings = [f.model_copy(update={"evidence": "\n".join(x for x in (f.evidence, *f.records, f.advice) if x)})
                if f.records or f.advice else f for f in report.findings]
    return report.model_copy(update={"findings": findings})


class CheckRunner:
    def __init__(self, poster: SlackPoster, engine: Checker, fixes: Fixes,
                 store: Store, timeout: float = 300.0) -> None:
        self.poster, self.engine, self.fixes = poster, engine, fixes
        self.store, self.timeout = store, timeout

    async def run(self, req: CheckRequest) -> None:
        steps = req.steps or (STEPS if req.host is not None else DOMAIN_STEPS)
        partial = Report(host=req.name, address=req.host.address if req.host else "")
        msg = await self.open(req, render.progress_blocks(partial, steps))
        if msg is None:
            return
        done: list[str] = []
        started = time.monotonic()

        async def progress(step: StepResult, report: Report) -> None:
            done.append(step.name)
            msg.show(render.progress_blocks(report, steps), esc(f"{req.name}: {step.name} done"))

        try:
            report = await asyncio.wait_for(
                req.run(self.engine, progress), self.timeout)
        except asyncio.CancelledError:
            self.poster.metrics.check_done("cancelled", time.monotonic() - started)
            await self._fail(msg, req, "the check was stopped before it finished (mailcheck "
                             "is shutting down, or the check ran over its time limit); "
                             "press Re-check", steps, done)
            raise
        except TimeoutError:
            self.poster.metrics.check_done("error", time.monotonic() - started)
            await self._fail(msg, req, f"no result within {self.timeout:.0f}s (the host or a "
                             "probe is not answering)", steps, done)
        except TransportError as e:
            self.poster.metrics.check_done("error", time.monotonic() - started)
            await self._fail(msg, req, f"{type(e).__name__}: {e}", steps, done, e.step)
        except MailcheckError as e:
            self.poster.metrics.check_done("error", time.monotonic() - started)
            await self._fail(msg, req, str(e), steps, done)
        except Exception as e:
            log.exception("check of %s crashed", req.name)
            self.poster.metrics.check_done("error", time.monotonic() - started)
            await self._fail(msg, req, f"internal error ({type(e).__name__}: {e}); "
                             "the bot's log has the traceback", steps, done)
        else:
            self.poster.metrics.check_done(report.verdict, time.monotonic() - started)
            try:
                await self._finish(msg, req, report)
            except Exception as e:  # the report could not be rendered or posted
                log.exception("posting the report of %s failed", req.name)
                await self._fail(msg, req, f"the report could not be posted ({type(e).__name__}: "
                                 f"{e})", steps, done, "conclusion")

    async def open(self, req: CheckRequest, blocks: list[dict], text: str | None = None):
        """The message a check updates: posted in the channel, or where the bot may not
        post, the response_url (without progress); None when neither works."""
        text = text or render.fallback_text(None, req.name, running=True)
        try:
            channel, ts = await self.poster.post(req.channel_id, blocks, text, req.thread_ts or None)
            return LiveMessage(self.poster, channel, ts)
        except SlackApiError as e:
            error = e.response.get("error", "")
            if error not in NOT_IN_CHANNEL or not req.response_url:
                log.error("cannot post the check of %s: %s", req.name, error)
                if req.response_url:
                    await self.poster.respond(req.response_url, {
                        "response_type": "ephemeral",
                        "text": f"I could not post in this channel ({error}); check not started."})
                return None
        await self.poster.respond(req.response_url, {
            "response_type": "ephemeral", "text": INVITE_HINT.format(error=error)})
        return ResponseUrlMessage(self.poster, req.response_url)

    async def _finish(self, msg, req: CheckRequest, report: Report) -> None:
        if req.host is None:
            report = report.model_copy(update={"host": req.name})
        report = with_changes_in_evidence(report)
        plan_ids: dict[str, str] = {}
        note = None
        actor = Actor("slack", req.user_id)
        try:
            await self.fixes.record_check(report, actor, req.channel_id)  # every check is audited
            if report.fixes:
                plan_ids = await self.fixes.register(report, actor, req.channel_id)
        except Exception as e:
            log.exception("recording the check of %s or its fixes failed", req.name)
            note = md(":warning: The proposed fixes have no Apply button: storing the check and its "
                      "plans failed ({}: {}). Press Re-check to try again.", type(e).__name__, str(e))
        details_id = await self.keep(report, req, msg)
        text = render.fallback_text(report, req.name)
        try:
            await self._deliver(msg, req, render.report_blocks(report, plan_ids, details_id, note), text)
        except Exception as e:  # the check did finish: say so, and what Slack refused
            log.exception("posting the report of %s failed", req.name)
            why = e.response.get("error") if isinstance(e, SlackApiError) else type(e).__name__
            await self._deliver(msg, req, render.unposted_blocks(report, details_id, str(why)), text)

    async def _deliver(self, msg, req: CheckRequest, blocks: list[dict], text: str) -> None:
        """The message's final content; where the bot was removed from the channel during
        the check, to the response_url instead (as when it never was in it)."""
        try:
            await msg.finish(blocks, text)
        except SlackApiError as e:
            if e.response.get("error") not in NOT_IN_CHANNEL or not req.response_url \
                    or isinstance(msg, ResponseUrlMessage):
                raise
            log.warning("the check of %s lost its channel (%s): answering by response_url",
                        req.name, e.response.get("error"))
            await ResponseUrlMessage(self.poster, req.response_url).finish(blocks, text)

    async def keep(self, report: Report, req: CheckRequest, msg) -> str | None:
        """Store the report next to the plans (Details and App Home read it, after a restart
        too); its id, or None (no Details button) when the store fails."""
        record = ReportRecord(id="r_" + secrets.token_urlsafe(9), report=report,
                              requested_by=req.user_id, channel=getattr(msg, "channel", req.channel_id),
                              ts=getattr(msg, "ts", ""))
        try:
            await self.store.add_report(record)
        except Exception:
            log.exception("storing the report of %s failed", req.name)
            return None
        return record.id

    async def _fail(self, msg, req: CheckRequest, why: str, steps: Sequence[str],
                    done: list[str], step: str | None = None) -> None:
        step = step or next((s for s in steps if s not in done), None)
        blocks = render.error_blocks(req.name, why, step)
        try:
            await self._deliver(msg, req, blocks, trim(esc(f"{req.name}: the check failed: {why}"), 3000))
        except Exception:
            log.exception("could not end the message of the check of %s", req.name)
