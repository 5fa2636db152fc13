"""Hosting providers: how to recognise them, and their documented mail-port policy.

Each policy row quotes the provider's own page, read on 2026-11-30, and names it
(`source`); `lift` says what that page tells a customer to do. A provider whose page
was not read has no policy here (None): mailcheck then says it has none on file
rather than repeating hearsay. Policies change: the finding always gives the source.

`owners`: words in the RDAP/whois holder of an address block that name the provider.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    ports: tuple[int, ...]  # the outbound ports the quote says are blocked (by default)
    quote: str  # verbatim from `source`
    lift: str  # how a customer lifts it, per `source`
    source: str  # the page read


@dataclass(frozen=True)
class Provider:
    key: str
    name: str
    owners: tuple[str, ...] = ()
    policy: Policy | None = None


PROVIDERS: dict[str, Provider] = {p.key: p for p in (
    Provider("aws", "Amazon Web Services (EC2)", ("AMAZON",), Policy(
        (25,),
        "By default, Amazon EC2 allows outbound traffic over port 25 only to private IPv4 "
        "addresses. Traffic over port 25 is blocked to public IPv4 addresses and IPv6 addresses.",
        "\"You can request that this restriction be removed\": AWS's knowledge-center article "
        "\"How do I remove the restriction on port 25 from my Amazon EC2 instance or Lambda "
        "function?\" (https://repost.aws/knowledge-center/ec2-port-25-throttle) has the request form",
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-resource-limits.html#port-25-throttle")),
    Provider("gcp", "Google Cloud (Compute Engine)", ("GOOGLE",), Policy(
        (25,),
        "Compute Engine does not allow outbound connections on port 25.",
        "the page names no way to lift it; it sends you to Google's tutorial on sending mail "
        "(through a relay service on another port)",
        "https://docs.cloud.google.com/marketplace/docs/troubleshooting")),
    Provider("azure", "Microsoft Azure", ("MICROSOFT",), Policy(
        (25,),
        "The Azure platform will block outbound SMTP connections on TCP port 25 for VMs that are "
        "deployed in Pay-as-you-go subscriptions. (For Enterprise Agreement subscriptions: \"the "
        "outbound SMTP connections on TCP port 25 will not be blocked.\")",
        "Pay-as-you-go in good standing: \"go to the Cannot send email (SMTP-Port 25) section of "
        "the Diagnose and Solve blade for an Azure Virtual Network resource in the Azure portal\"; "
        "for MSDN, Azure Pass, Azure in Open, Education, Azure for Students, Visual Studio and "
        "Free Trial subscriptions \"Requests to remove these restrictions won't be granted\" "
        "(page dated 2021-04-28 as read)",
        "https://learn.microsoft.com/en-us/azure/virtual-network/troubleshoot-outbound-smtp-connectivity")),
    Provider("digitalocean", "DigitalOcean", ("DIGITALOCEAN",), Policy(
        (25,),
        "SMTP port 25 is blocked on all Droplets for new accounts to prevent spam and other "
        "abuses of our platform.",
        "the page names no way to lift it; it recommends a dedicated email delivery service "
        "(SendGrid)",
        "https://docs.digitalocean.com/support/why-is-smtp-blocked/")),
    Provider("linode", "Akamai Cloud (Linode)", ("LINODE", "AKAMAI"), Policy(
        (25, 465, 587),
        "In an effort to fight spam, Linode restricts outbound connections over ports 25, 465, "
        "and 587 on Compute Instances for some new accounts created after November 5th, 2019.",
        "\"contact the Support team and request that the restrictions are lifted\", with your "
        "name, your use case and sending practices, and the sending domain(s)",
        "https://github.com/linode/docs/blob/develop/docs/products/platform/get-started/guides/"
        "send-email/index.md (published at linode.com/docs/products/platform/get-started/guides/"
        "send-email/)")),
    Provider("hetzner", "Hetzner", ("HETZNER",)),
    Provider("oracle", "Oracle Cloud Infrastructure", ("ORACLE",)),
    Provider("openstack", "an OpenStack cloud (e.g. OVHcloud Public Cloud)"),
    Provider("ovh", "OVHcloud", ("OVH",)),
)}


def by_owner(*names: str | None) -> Provider | None:
    """The provider whose owner words appear in an address holder's names, if one does."""
    text = " ".join(n for n in names if n).upper()
    return next((p for p in PROVIDERS.values() if any(w in text for w in p.owners)), None)


def policy_text(provider: Provider) -> str:
    if provider.policy is None:
        return (f"mailcheck has no documented mail-port policy on file for {provider.name}: "
                "see its documentation")
    p = provider.policy
    return f"{provider.name} documents: \"{p.quote}\" To lift it: {p.lift}. (Source: {p.source})"
