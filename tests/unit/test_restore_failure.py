"""A restore that fails says which of its lines failed, run by a real sh."""

from __future__ import annotations

import subprocess

from bot.fixes.evidence import restore_failure
from bot.models import BackupSpec, CommandResult, Fix
from bot.transport import ScriptLine, failed_lines, script_command


def run(lines: list[ScriptLine]) -> CommandResult:
    cmd = script_command(lines, keep_going=True)
    p = subprocess.run(cmd.argv, capture_output=True, text=True, timeout=10)
    return CommandResult(command=cmd, exit_status=p.returncode, stdout=p.stdout, stderr=p.stderr)


def fix(reload: list[list[str]]) -> Fix:
    return Fix(id="f", title="t", summary="s", kind="config", commands=[["true"]],
               backup=BackupSpec(paths=["/etc/x.conf"], reload=reload))


COPY, RESTART = ScriptLine(("true",)), ScriptLine(("sh", "-c", "echo no config >&2; exit 3"))


def test_every_line_is_tried_and_each_failure_is_named():
    r = run([ScriptLine(("false",)), COPY, RESTART])
    assert r.exit_status == 1 and failed_lines(r.stderr) == [0, 2]


def test_only_the_reload_failed_the_files_are_said_to_be_back():
    r = run([COPY, RESTART])
    said = restore_failure([COPY, RESTART], fix([list(RESTART.argv)]), r)
    assert said.startswith("the saved files and rulesets were put back, then `sh -c")
    assert "no config" in said and "mailcheck-failed-line" not in said


def test_a_copy_that_failed_is_not_said_to_be_back():
    bad_copy = ScriptLine(("false",))
    r = run([bad_copy, RESTART])
    said = restore_failure([bad_copy, RESTART], fix([list(RESTART.argv)]), r)
    assert "put back" not in said and said.startswith("`false`, `sh -c")
