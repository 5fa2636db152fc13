"""The MTA configuration reader on output captured from real exim, postfix and dovecot.

exim4_-bP*.txt and doveconf.txt: Debian 12's exim4 4.96 and dovecot 2.3.19 (the
second exim file with `-C` a copy of Debian's generated config, public interfaces; the
transports file `exim4 -bP transports` with `-C` that config after DKIM_DOMAIN,
DKIM_SELECTOR, DKIM_PRIVATE_KEY macros and primary_hostname = mail.example.test);
postconf_*: Debian 12's postfix 3.7 in the postfix lab host (tests/postfixlab.py).
"""

from pathlib import Path

from bot.checks import mta_config as mc
from bot.models import Command, CommandResult

DATA = Path(__file__).parent.parent / "data" / "mta"


def _r(argv, name=None, exit_status=0, text=None):
    out = text if text is not None else (DATA / name).read_text()
    return argv, CommandResult(Command(argv), exit_status, out, "")


def test_debian_exim_default_is_loopback_only():
    results = dict([_r(mc.EXIM["exim4"], "exim4_-bP.txt"), _r(mc.EXIM_DEBCONF, "update-exim4.conf.conf"),
                    _r(mc.EXIM["exim"], exit_status=127, text="")])
    cfg = mc.read_mta_config(results)
    assert cfg.exim is not None and cfg.exim.binary == "exim4"
    assert [(i.address, i.port, i.loopback) for i in cfg.exim.interfaces] == [
        ("127.0.0.1", None, True), ("::1", None, True)]
    assert cfg.exim.smtp_ports == [25] and cfg.exim.tls_on_connect_ports == []
    assert cfg.exim.debconf["dc_local_interfaces"] == "127.0.0.1 ; ::1"
    assert cfg.postfix is None and cfg.dovecot is None


def test_exim_public_interfaces_ports_and_domains():
    cfg = mc.read_mta_config(dict([_r(mc.EXIM["exim4"], "exim4_-bP_public.txt")]))
    assert [(i.address, i.port) for i in cfg.exim.interfaces] == [("*", 25), ("*", 587), ("198.18.5.2", 465)]
    assert cfg.exim.smtp_ports == [25, 465, 587] and cfg.exim.tls_on_connect_ports == [465]
    assert cfg.helo_name == "mx.example.test"
    assert cfg.named_domains == [("mx.example.test", "exim primary_hostname"),
                                 ("example.test", "exim qualify_domain"),
                                 ("mail.example.org", "exim local_domains")]
    assert cfg.exim.debconf is None


def test_postfix_master_services_and_params():
    results = dict([_r(mc.POSTCONF, "postconf_-n.txt"), _r(mc.POSTCONF_MASTER, "postconf_-M_smtps.txt")])
    cfg = mc.read_mta_config(results).postfix
    assert [i.address for i in cfg.interfaces] == ["*"] and cfg.protocols == "all"
    assert cfg.helo_name == "mx.lab.test"
    (smtps,) = cfg.inet(465)
    assert smtps.name == "smtps" and smtps.command == "smtpd"
    assert smtps.options == {"smtpd_tls_wrappermode": "yes"}
    assert [s.command for s in cfg.inet(587)] == ["smtpd"] and [s.command for s in cfg.inet(25)] == ["smtpd"]


def test_postscreen_owns_port_25():
    cfg = mc.read_mta_config(dict([_r(mc.POSTCONF, text="inet_interfaces = loopback-only\n"),
                                   _r(mc.POSTCONF_MASTER, "postconf_-M_postscreen.txt")])).postfix
    assert [s.command for s in cfg.inet(25)] == ["postscreen"]
    assert cfg.inet(465) == []
    assert [(i.address, i.loopback) for i in cfg.interfaces] == [("loopback-only", True)]


def test_dovecot_listen_and_log():
    cfg = mc.read_mta_config(dict([_r(mc.DOVECONF, "doveconf.txt")])).dovecot
    assert [i.address for i in cfg.interfaces] == ["*", "*"]
    assert cfg.protocols == ["imap"] and cfg.log_path == "syslog"


def test_missing_or_broken_output_is_none_never_an_exception():
    results = dict([_r(mc.EXIM["exim4"], exit_status=127, text=""), _r(mc.POSTCONF, exit_status=None, text=""),
                    _r(mc.DOVECONF, exit_status=1, text="doveconf: Fatal: Error in configuration file\n")])
    cfg = mc.read_mta_config(results)
    assert cfg.exim is None and cfg.postfix is None and cfg.dovecot is None
    assert cfg.domains == [] and cfg.helo_name is None


def test_exim_list_separators():
    assert mc.exim_list("<; 127.0.0.1 ; ::1") == ["127.0.0.1", "::1"]
    assert mc.exim_list("a : b::c : d") == ["a", "b:c", "d"]
    assert mc.exim_list("") == []


def test_exim_transports_give_the_dkim_signer_and_helo_data():
    results = dict([_r(mc.EXIM["exim4"], "exim4_-bP_public.txt"),
                    _r(mc.EXIM_TRANSPORTS["exim4"], "exim4_-bP_transports_dkim.txt")])
    exim = mc.read_mta_config(results).exim
    assert [t.name for t in exim.smtp_transports] == ["remote_smtp", "remote_smtp_smarthost"]
    remote = exim.smtp_transports[0].options
    assert remote["dkim_selector"] == "sel2026"
    assert remote["dkim_domain"] == "${lc:${domain:$h_from:}}"
    assert remote["dkim_private_key"] == "/etc/exim4/dkim/${dkim_domain}.${dkim_selector}.key"
    assert exim.smtp_transports[1].options["dkim_selector"] == ""
    assert exim.helo_name == "mx.example.test"  # helo_data = $primary_hostname


def test_exim_helo_data_literal_or_computed():
    def helo(data: str) -> str | None:
        text = f"remote_smtp transport:\ndriver = smtp\nhelo_data = {data}\n"
        results = dict([_r(mc.EXIM["exim4"], text="primary_hostname = mx.example.test\n"),
                        _r(mc.EXIM_TRANSPORTS["exim4"], text=text)])
        return mc.read_mta_config(results).helo_name
    assert helo("mail.example.org") == "mail.example.org"
    assert helo("${lookup dnsdb {ptr=$sending_ip_address}{$value}{$primary_hostname}}") is None
    assert helo("") == "mx.example.test"


def test_domain_lists_from_lookup_files_need_a_second_round():
    exim = "primary_hostname = mx.example.test\n" \
           "domainlist local_domains = @ : lsearch;/etc/exim4/virtual_domains : dsearch;/srv/mail\n"
    postfix = "myhostname = mx.example.test\nmydomain = example.test\n" \
              "virtual_mailbox_domains = hash:/etc/postfix/vdomains, proxy:mysql:/etc/postfix/my.cf\n"
    first = dict([_r(mc.EXIM["exim4"], text=exim), _r(mc.POSTCONF, text=postfix)])
    assert [c.argv for c in mc.followup_commands(first)] == [
        ("cat", "/etc/exim4/virtual_domains"), ("ls", "-1", "/srv/mail"),
        ("postmap", "-s", "hash:/etc/postfix/vdomains")]
    assert mc.read_mta_config(first).domains == ["mx.example.test", "example.test"]
    both = {**first, **dict([_r(("cat", "/etc/exim4/virtual_domains"), text="# hosted\nexample.org: x\n"),
                             _r(("ls", "-1", "/srv/mail"), text="example.net\n"),
                             _r(("postmap", "-s", "hash:/etc/postfix/vdomains"), text="example.com OK\n")])}
    assert mc.read_mta_config(both).named_domains == [
        ("mx.example.test", "exim primary_hostname"),
        ("example.org", "exim local_domains lsearch;/etc/exim4/virtual_domains"),
        ("example.net", "exim local_domains dsearch;/srv/mail"),
        ("example.test", "postfix mydomain"),
        ("example.com", "postfix virtual_mailbox_domains hash:/etc/postfix/vdomains")]
