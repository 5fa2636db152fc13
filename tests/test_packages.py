"""scripts/apt-packages.txt installs every program the lab runs (issue 8).

1. Lab code declares what it runs: the programs named in the lab's Python (calls of
   LabHost.sh/popen/daemon, _run, subprocess, also through `sh -c`, `env` and `ip netns
   exec`), in its shell scripts, and in the firewall corpus' setup commands are all in
   tests/labhost.py REQUIRED or tests/test_container.py REQUIRED. (At run time _run() and
   LabHost.sh/popen/daemon refuse an undeclared program too, which covers argv built at
   run time, e.g. the fix commands the tests apply.)
2. Each declared program comes from a Debian package that scripts/apt-packages.txt
   lists, or one of Priority: required: `dpkg -S "$(command -v PROG)"`, also trying the
   resolved symlink (alternatives) and the other side of merged /usr.

Needs dpkg and every program installed (scripts/setup does it); without dpkg the test is
skipped, or failed when MAILCHECK_LAB=required.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import labhost, test_container

ROOT = Path(__file__).resolve().parent.parent
APT_LIST = ROOT / "scripts" / "apt-packages.txt"
DECLARED = set(labhost.REQUIRED) | set(test_container.REQUIRED)
LAB_CODE = ("tests/**/*.py", "scripts/*.py", "bench/*.py")
RUNNERS = {"sh", "_sh", "_spawn", "popen", "daemon", "_run", "run", "Popen", "check_output", "check_call", "call",
           "create_subprocess_exec"}
NOT_PROGRAMS = {  # shell keywords and builtins: what a shell runs without exec'ing a program
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "in", "!", "{", "}", "[", "test", "echo", "printf", "exec", "export", "set", "unset", "cd",
    "exit", "return", "true", "false", ":", ".", "read", "local", "shift", "trap", "wait"}
STAY = {"if", "then", "else", "elif", "while", "until", "do", "!", "{", "exec"}  # a command follows


# --- what lab code names -----------------------------------------------------------------

def shell_programs(script: str) -> set[str]:
    """The programs a POSIX shell script runs (heredoc bodies, $((...)) skipped; $(...),
    `sh -c '...'`, `env` and `ip netns exec` followed)."""
    script = re.sub(r"<<-?\s*'?(\w+)'?[^\n]*\n.*?\n\s*\1\s*\n", "\n", script, flags=re.S)
    script = re.sub(r"\$\(\(.*?\)\)", "0", script)
    found: set[str] = set()
    for inner in re.findall(r"\$\(([^()]*)\)", script):
        found |= shell_programs(inner)
    script = re.sub(r"\$\([^()]*\)", "X", script)
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace, lexer.whitespace_split, lexer.commenters = " \t", True, "#"
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token and all(c in ";&|()\n" for c in token):
            found |= argv_programs(words)
            words = []
        else:
            words.append(token)
    return found


def argv_programs(words: list[str | None]) -> set[str]:
    """The programs one command runs; None stands for a word not known until run time."""
    words = [w for i, w in enumerate(words) if not _is_redirection(words, i)]
    while words and words[0] is not None and (words[0] in STAY or re.match(r"\w+=", words[0])):
        words = words[1:]
    if not words or words[0] is None or words[0] in NOT_PROGRAMS:
        return set()
    found = set(labhost.programs_run([w or "?" for w in words])) - {"?"}
    for i, word in enumerate(words[:-2]):
        if word in ("sh", "bash") and words[i + 1] == "-c" and words[i + 2] is not None:
            found |= {word} | shell_programs(words[i + 2])
    return found


def _is_redirection(words: list[str | None], i: int) -> bool:
    def op(w):
        return w is not None and w and set(w) <= set("<>&")
    return op(words[i]) or (i > 0 and op(words[i - 1])) or bool(
        words[i] and re.fullmatch(r"\d+", words[i]) and i + 1 < len(words) and op(words[i + 1]))


def python_programs(path: Path) -> dict[str, list[int]]:
    """Programs named by literal argv words in calls of RUNNERS: {program: [line, ...]}."""
    tree = ast.parse(path.read_text())
    constants = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)}
    found: dict[str, list[int]] = {}
    for node in ast.walk(tree):
        func = getattr(node, "func", None)
        name = getattr(func, "attr", None) or getattr(func, "id", None)
        if not isinstance(node, ast.Call) or name not in RUNNERS or not node.args:
            continue
        first = node.args[0]
        args = first.elts if isinstance(first, (ast.List, ast.Tuple)) else node.args
        for prog in argv_programs(_words(args, constants)):
            found.setdefault(prog, []).append(node.lineno)
    return found


def _words(args: list[ast.expr], constants: dict[str, ast.expr]) -> list[str | None]:
    words: list[str | None] = []
    for arg in args:
        value = constants.get(arg.value.id) if isinstance(arg, ast.Starred) and isinstance(
            arg.value, ast.Name) else None
        if isinstance(value, (ast.List, ast.Tuple)):
            words += _words(value.elts, constants)
        elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            words.append(arg.value)
        else:
            words.append(None)
    return words


def corpus_programs() -> dict[str, list[str]]:
    """Programs the firewall corpus' setup commands run (scripts they run included)."""
    found: dict[str, list[str]] = {}
    for case_file in sorted((ROOT / "tests/data/firewall").glob("*/case.yaml")):
        for argv in (yaml.safe_load(case_file.read_text()) or {}).get("setup") or []:
            argv = [str(w) for w in argv]
            progs = argv_programs(argv)
            if argv[0] == "sh" and len(argv) > 1 and argv[1].startswith("{dir}/"):
                progs |= shell_programs((case_file.parent / argv[1][6:]).read_text())
            for prog in progs:
                found.setdefault(prog, []).append(str(case_file.relative_to(ROOT)))
    return found


def lab_code_programs() -> dict[str, list[str]]:
    """Every program lab code names: {program: [where, ...]}."""
    found = corpus_programs()
    for pattern in LAB_CODE:
        for path in sorted(ROOT.glob(pattern)):
            for prog, lines in python_programs(path).items():
                found.setdefault(prog, []).extend(f"{path.relative_to(ROOT)}:{n}" for n in lines)
    for path in sorted(ROOT.glob("tests/**/*.sh")):
        if not path.is_symlink():
            for prog in shell_programs(path.read_text()):
                found.setdefault(prog, []).append(str(path.relative_to(ROOT)))
    return found


def test_lab_code_declares_every_program_it_runs():
    found = lab_code_programs()
    assert {"ipset", "firewalld", "dbus-daemon", "sshd", "podman"} <= set(found)  # it sees
    undeclared = [f"{prog} (run at {', '.join(where[:3])})" for prog, where in sorted(found.items())
                  if Path(prog).name not in DECLARED | set(labhost.OUTSIDE_DEBIAN)]
    assert not undeclared, ("lab code runs programs that tests/labhost.py REQUIRED (or "
                            "tests/test_container.py REQUIRED) does not declare: "
                            + "; ".join(undeclared))


def test_shell_scan_follows_what_a_shell_runs():
    script = ("set -eu\nX=$((1+2)) mkdir -p a && cp -a b/. c/ 2>/dev/null\n"
              "cat > f <<EOF\nnot-a-program here\nEOF\n"
              'until [ "$(firewall-cmd --state)" = running ]; do sleep 0.2; done\n'
              "unshare -m --propagation private sh -c 'mount --bind a b; exec firewalld --nopid' "
              "</dev/null >/dev/null 2>&1\n[ $i -gt 1 ] && { echo no >&2; exit 1; }\n"
              "env A=1 ip netns exec mc1 nft list ruleset | tail -n 1  # a comment: rm\n")
    assert shell_programs(script) == {"mkdir", "cp", "cat", "firewall-cmd", "sleep", "unshare",
                                      "sh", "mount", "firewalld", "env", "ip", "nft", "tail"}


# --- where the programs come from ----------------------------------------------------------

def listed_packages() -> set[str]:
    lines = (line.split("#")[0].strip() for line in APT_LIST.read_text().splitlines())
    return {line for line in lines if line}


def owners(paths: list[str]) -> dict[str, list[str]]:
    """`dpkg -S` for many paths at once: {path: [package, ...]} for the paths dpkg knows."""
    out = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("diversion ") or ": " not in line:
            continue
        packages, path = line.rsplit(": ", 1)
        found[path] = [p.strip().split(":")[0] for p in packages.split(",")]
    return found


def candidates(path: str) -> list[str]:
    """The path and its target, each also on the other side of merged /usr (/usr/sbin vs /sbin)."""
    out: list[str] = []
    for p in (path, os.path.realpath(path)):
        for q in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
            if q not in out:
                out.append(q)
    return out


def priorities(packages: set[str]) -> dict[str, str]:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Priority}\n", *sorted(packages)],
                         capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def package_problems(programs: set[str], listed: set[str]) -> list[str]:
    """Why scripts/apt-packages.txt would not install each program (empty: it would)."""
    where = {prog: shutil.which(prog, path=labhost.SBIN_PATH) for prog in sorted(programs)}
    problems = [f"{prog}: not installed on this machine (run scripts/setup; if it still lacks "
                "it, add its package to scripts/apt-packages.txt)" for prog, p in where.items() if not p]
    # every copy on the PATH, first first: a machine's own build earlier on the PATH (this
    # machine's /usr/local/bin/docker) does not hide that a listed package installs one
    found = {prog: [c for d in labhost.SBIN_PATH.split(":") if shutil.which(prog, path=d)
                    for c in candidates(str(Path(d) / prog))] for prog, p in where.items() if p}
    known = owners([c for cs in found.values() for c in cs])
    package_of = {prog: next((known[c] for c in cs if c in known), None) for prog, cs in found.items()}
    priority = priorities({p for pkgs in package_of.values() for p in pkgs or ()})
    for prog, pkgs in package_of.items():
        if pkgs is None:
            problems.append(f"{prog} ({where[prog]}): no Debian package owns it (dpkg -S)")
        elif not any(p in listed or priority.get(p) == "required" for p in pkgs):
            problems.append(f"{prog} ({where[prog]}) comes from package {', '.join(pkgs)} "
                            f"(Priority: {', '.join(priority.get(p, '?') for p in pkgs)}), "
                            "which scripts/apt-packages.txt does not list")
    return problems


def test_every_lab_program_comes_from_a_listed_package():
    if not shutil.which("dpkg"):
        msg = "the package check needs dpkg (Debian)"
        if os.environ.get("MAILCHECK_LAB") == "required":
            pytest.fail(msg)
        pytest.skip(msg)
    problems = package_problems(DECLARED, listed_packages())
    assert not problems, "scripts/apt-packages.txt misses what the lab runs:\n  " + "\n  ".join(problems)


def test_lab_helpers_refuse_an_undeclared_program():
    assert labhost.programs_run(["env", "A=1", "ip", "netns", "exec", "mc7", "/usr/sbin/nft"]) == [
        "env", "ip", "nft"]
    argv = ("ip", "netns", "exec", "mc7", "named", "-c", "named.conf")  # not a literal: unscanned
    with pytest.raises(labhost.UndeclaredProgram, match="'named' .*does not declare"):
        labhost._run(*argv)
