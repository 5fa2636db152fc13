"""Every step, in the guide's order. A new step is a Check subclass and one line here."""

from __future__ import annotations

from bot.checks.base import Check
from bot.checks.conclusion import Conclusion
from bot.checks.dns import Dns
from bot.checks.firewall import Firewall
from bot.checks.outbound import Outbound
from bot.checks.ports import Ports
from bot.checks.provider import ProviderCheck
from bot.checks.reputation import Reputation
from bot.checks.resolver import Resolver
from bot.checks.services import Services
from bot.checks.tools import Tools
from bot.checks.vantage import Vantage

REGISTRY: tuple[type[Check], ...] = (
    Tools,  # 1. are dig, lsof, nc, whois there?
    Services,  # 2. do the daemons run and listen publicly?
    Ports,  # 3. are the ports reachable from outside?
    Vantage,  # 3a. and from the inventory's vantage points: do they agree?
    Outbound,  # 3b. can the host reach other mail servers?
    Resolver,  # 3c. does the host's resolver answer (MX lookups, the greeting's reverse lookup)?
    Firewall,  # 4. which rule blocks which port?
    ProviderCheck,  # 5a. who hosts it, and its documented port policy
    Conclusion,  # 5. the provider blocks it
    Dns,  # Part 2: the mail domains and the host's names in DNS
    Reputation,  # Part 2: the host's addresses in the DNS blocklists
)
STEPS: tuple[str, ...] = tuple(c.name for c in REGISTRY)
DOMAIN_STEPS: tuple[str, ...] = tuple(c.name for c in REGISTRY if c.domain_only)  # `dns DOMAIN`


def all_checks() -> list[Check]:
    """One instance of every registered step, in the guide's order."""
    return [c() for c in REGISTRY]
