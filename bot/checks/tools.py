"""Guide step 1: are the diagnostic tools there (dig, lsof, nc, whois)?

Each tool is run with a harmless flag; exit 127 (from `timeout`: command not
found) means missing. The fix installs them with the distro's package manager.
"""

from __future__ import annotations

from bot.checks.base import Check, CheckContext, CheckInput, StepOutcome
from bot.checks.catalogue import finding
from bot.models import Command, Fix

PROBES: dict[str, tuple[str, ...]] = {
    "dig": ("dig", "-v"),
    "lsof": ("lsof", "-v"),
    "nc": ("nc", "-h"),
    "whois": ("whois", "--version"),
}
PACKAGES = {
    "debian": {"dig": "bind9-dnsutils", "nc": "netcat-openbsd", "lsof": "lsof", "whois": "whois"},
    "rhel": {"dig": "bind-utils", "nc": "nmap-ncat", "lsof": "lsof", "whois": "whois"},
}
ORDER = ("dig", "nc", "lsof", "whois")  # the guide's package order


def install_argv(distro_family: str, distro_id: str, tools: list[str]) -> list[str] | None:
    """The install command for these tools (all four when `tools` is empty), or None."""
    names = PACKAGES.get(distro_family)
    if names is None:
        return None
    pkgs = [names[t] for t in ORDER if t in (tools or ORDER)]
    if distro_family == "debian":
        return ["apt-get", "install", "-y", *pkgs]
    tool = "yum" if distro_id == "centos" else "dnf"
    return [tool, "install", "-y", *pkgs]


INSTALL_TIMEOUT = 900.0  # seconds for each package-manager command


def install_fix(distro_family: str, distro_id: str, tools: list[str]) -> Fix | None:
    argv = install_argv(distro_family, distro_id, tools)
    if argv is None:
        return None
    debian = distro_family == "debian"
    commands = [["apt-get", "update"], argv] if debian else [argv]
    # a package manager killed halfway leaves dpkg/rpm broken: a budget of its own, no prompts
    return Fix(id="tools-install", kind="tools", summary=f"Install {', '.join(tools)}",
               label=f"Install {', '.join(tools)}",
               commands=commands, rollback=[], backend=argv[0], findings=["tools.missing"],
               timeout=INSTALL_TIMEOUT, env={"DEBIAN_FRONTEND": "noninteractive"} if debian else {})


class Tools(Check):
    name = "tools"
    ssh = "required"

    def commands(self, ctx: CheckContext) -> list[Command]:
        return [Command(argv, timeout=5) for argv in PROBES.values()]

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        missing, unknown = [], []
        for tool, argv in PROBES.items():
            r = inp.results.get(argv)
            if r is None or r.exit_status is None:
                unknown.append(tool)
            elif r.missing:
                missing.append(tool)
        evidence = "\n".join(f"{t}: {'missing' if t in missing else 'unknown' if t in unknown else 'present'}"
                             for t in PROBES)
        if not missing:
            status = "warn" if unknown else "ok"
            summary = "dig, lsof, nc and whois are installed" if not unknown else \
                f"could not tell whether {', '.join(unknown)} are installed"
            return StepOutcome(status, summary, evidence)
        fix = install_fix(inp.facts.distro_family, inp.facts.distro_id, missing)
        how = f"; install with: {' '.join(fix.commands[-1])}" if fix else \
            f" (unknown distro {inp.facts.distro_id!r}: install them with its package manager)"
        f = finding("tools.missing", f"Missing diagnostic tools: {', '.join(missing)}{how}",
                    evidence=evidence, fixes=[fix.id] if fix else [])
        return StepOutcome("warn", f"missing: {', '.join(missing)}", evidence, [f], [fix] if fix else [])
