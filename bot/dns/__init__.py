"""DNS and reputation: the guide's Part 2 (issue 12).

Pure parsers and evaluators (spf_parse, spf, dmarc, dkim, dkim_config,
mtasts, dane, dnsbl classification) plus one async resolver wrapper
(resolver.Resolver) that every lookup goes through: mailcheck's own
nameservers (MAILCHECK_RESOLVERS) and one lifetime per query
(MAILCHECK_DNS_TIMEOUT), all lookups concurrent. domain.py runs a domain's
and an address's checks; issues.py turns the results into dns.* / dnsbl.*
issues, each with the zone-file lines to paste and who controls the zone.
"""
