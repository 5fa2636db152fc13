"""Who hosts the server: cloud metadata from the host, and who holds its address.

From the host (curl, 1 s each, the headers each service requires): AWS IMDSv2
(a token PUT, then the instance identity document with that token, in one fixed
script on the host, so the token never leaves it), Google (`Metadata-Flavor: Google`,
which the answer echoes),
Azure (`Metadata: true`), Oracle (`Authorization: Bearer Oracle`), DigitalOcean,
Hetzner, OpenStack. Each is recognised by its own answer's shape, never by an
answer alone. From where mailcheck runs: the RDAP/whois holder of the host's
address (bot/owner.py, CheckInput.owner). The finding names the provider, how it
was recognised, and quotes its documented mail-port policy (bot/checks/providers.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.checks.base import Check, CheckContext, CheckInput, Results, StepOutcome
from bot.checks.catalogue import finding
from bot.checks.providers import PROVIDERS, Provider, by_owner, policy_text
from bot.models import Command, CommandResult
from bot.owner import Owner

METADATA = "http://169.254.169.254"
CURL = ("curl", "-sS", "-i", "-m", "1")


@dataclass(frozen=True)
class Endpoint:
    key: str
    path: str
    headers: tuple[str, ...] = ()
    method: str = "GET"

    def argv(self, *more_headers: str) -> tuple[str, ...]:
        words = [w for h in (*self.headers, *more_headers) for w in ("-H", h)]
        method = ("-X", self.method) if self.method != "GET" else ()
        return (*CURL, *method, *words, METADATA + self.path)

    def describe(self) -> str:
        return f"{self.method} {METADATA}{self.path}" + (f" ({', '.join(self.headers)})" if self.headers else "")


class AwsImdsV2(Endpoint):
    """IMDSv2: PUT a token (-f: no token, no second request), then GET with it. A fixed
    script (no text of ours or the host's is pasted into it): the token stays in the
    host's shell, out of mailcheck's argv, results and report."""

    SCRIPT = ('t=$(curl -fsS -m 1 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" '
              f'{METADATA}/latest/api/token) && '
              f'curl -sS -i -m 1 -H "X-aws-ec2-metadata-token: $t" {METADATA}{{path}}')

    def argv(self, *more_headers: str) -> tuple[str, ...]:
        return ("sh", "-c", self.SCRIPT.format(path=self.path))

    def describe(self) -> str:
        return f"PUT {METADATA}/latest/api/token, then GET {METADATA}{self.path} with the token"


ENDPOINTS = (
    AwsImdsV2("aws", "/latest/dynamic/instance-identity/document"),
    Endpoint("gcp", "/computeMetadata/v1/instance/zone", ("Metadata-Flavor: Google",)),
    Endpoint("azure", "/metadata/instance/compute?api-version=2021-02-01", ("Metadata: true",)),
    Endpoint("oracle", "/opc/v2/instance/", ("Authorization: Bearer Oracle",)),
    Endpoint("digitalocean", "/metadata/v1.json"),
    Endpoint("hetzner", "/hetzner/v1/metadata"),
    Endpoint("openstack", "/openstack/latest/meta_data.json"),
)


@dataclass(frozen=True)
class Http:
    status: int | None  # None: no HTTP answer
    headers: dict[str, str]
    body: str
    error: str = ""  # curl's message when there was no answer


def parse_curl(r: CommandResult | None) -> Http:
    """`curl -sS -i` output -> status, headers (lower-case names), body."""
    if r is None:
        return Http(None, {}, "", "not run")
    if r.missing:
        return Http(None, {}, "", "curl is not installed")
    text = r.stdout.replace("\r\n", "\n")
    while text.startswith("HTTP/") and re.match(r"HTTP/\S+ 1\d\d", text):  # 100 Continue
        text = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    head, _, body = text.partition("\n\n")
    status_line, *header_lines = head.split("\n")
    m = re.match(r"HTTP/\S+ (\d{3})", status_line)
    if not m:
        why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.exit_status}"
        return Http(None, {}, "", "no answer within 1 s" if r.timed_out or "(28)" in why else why)
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)
               if k.strip()}
    return Http(int(m.group(1)), headers, body)


def _json(body: str) -> dict:
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _aws(h: Http) -> str | None:
    d = _json(h.body)
    return f"region {d['region']}, instance {d['instanceId']}" if {"region", "instanceId"} <= d.keys() else None


def _gcp(h: Http) -> str | None:
    m = re.fullmatch(r"projects/\d+/zones/([a-z0-9-]+)\s*", h.body)
    return f"zone {m.group(1)}" if m and h.headers.get("metadata-flavor") == "Google" else None


def _azure(h: Http) -> str | None:
    d = _json(h.body)
    return f"location {d['location']}, VM {d['vmId']}" if {"location", "vmId"} <= d.keys() else None


def _oracle(h: Http) -> str | None:
    d = _json(h.body)
    region = d.get("canonicalRegionName") or d.get("region")
    return f"region {region}" if region and str(d.get("id", "")).startswith("ocid1.") else None


def _digitalocean(h: Http) -> str | None:
    d = _json(h.body)
    return f"region {d.get('region')}, droplet {d['droplet_id']}" if "droplet_id" in d else None


def _hetzner(h: Http) -> str | None:
    kv = dict(re.findall(r"^([a-z0-9-]+):\s*(.*?)\s*$", h.body, re.M))
    if "instance-id" not in kv:
        return None
    return f"region {kv.get('region') or kv.get('availability-zone') or '?'}, server {kv['instance-id']}"


def _openstack(h: Http) -> str | None:
    d = _json(h.body)
    return f"zone {d.get('availability_zone') or '?'}, instance {d['uuid']}" \
        if "uuid" in d and ("availability_zone" in d or "project_id" in d) else None


READERS: dict[str, Callable[[Http], str | None]] = {
    "aws": _aws, "gcp": _gcp, "azure": _azure, "oracle": _oracle, "digitalocean": _digitalocean,
    "hetzner": _hetzner, "openstack": _openstack}


@dataclass(frozen=True)
class Identity:
    provider: Provider | None
    how: str  # how it was recognised, in words
    lines: tuple[str, ...]  # what each endpoint said


def identify(results: Results, owner: Owner | None) -> Identity:
    """The provider, from the metadata answers and the address's holder (pure)."""
    lines, found = [], []
    for endpoint in ENDPOINTS:
        h = parse_curl(results.get(endpoint.argv()))
        what = READERS[endpoint.key](h) if h.status == 200 else None
        said = f"HTTP {h.status}" if h.status is not None else h.error
        lines.append(f"{endpoint.describe()}: {said}{' -> ' + what if what else ''}")
        if what:
            found.append((PROVIDERS[endpoint.key], f"{endpoint.key} metadata: {what}"))
    held = by_owner(owner.name, owner.network) if owner is not None and owner.name else None
    if owner is not None:
        lines.append(f"address holder: {owner.describe()}")
    if found:
        provider, how = found[0]
        if provider.key == "openstack" and held is not None:
            provider = held  # an OpenStack cloud: the holder names whose
        return Identity(provider, how, tuple(lines))
    if held is not None:
        return Identity(held, f"the address's holder ({owner.name}, {owner.source})", tuple(lines))
    return Identity(None, "", tuple(lines))


class ProviderCheck(Check):
    name = "provider"
    ssh = "required"
    own_batch = True  # nc / curl may wait on the network
    uses_owner = True

    def commands(self, ctx: CheckContext) -> list[Command]:
        return [Command(e.argv(), timeout=5) for e in ENDPOINTS]

    def evaluate(self, inp: CheckInput) -> StepOutcome:
        ident = identify(inp.results, inp.owner)
        evidence = "\n".join(ident.lines)
        if ident.provider is None:
            owner = inp.owner.describe() if inp.owner is not None else "the address's holder was not asked"
            f = finding("provider.unknown", f"The hosting provider is not known: no cloud metadata "
                        f"service answered from the host, and {owner}", evidence=evidence)
            return StepOutcome("ok", "unknown", evidence, [f])
        p = ident.provider
        f = finding("provider.identified", f"The host runs at {p.name} (recognised by {ident.how}). "
                    + policy_text(p), evidence=evidence)
        return StepOutcome("ok", p.name, evidence, [f])
