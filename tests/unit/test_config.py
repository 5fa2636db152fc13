"""Settings and inventory: bad input gets a clear message; secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError, TargetError
from config.inventory import load_inventory, parse_target
from config.settings import Settings

EXAMPLE = Path(__file__).parents[2] / "config" / "inventory.example.yaml"


def test_example_inventory_loads():
    inv = load_inventory(EXAMPLE)
    assert set(inv.hosts) == {"mx1", "mx2", "bastion"}
    mx2 = inv.get("mx2")
    assert mx2.port == 2222 and mx2.use_sudo and mx2.jump == "bastion"
    assert inv.get("mx1").known_hosts == Path("/etc/mailcheck/known_hosts")  # from defaults
    assert inv.groups_of("mx1") == ["mail"]


def test_toml_inventory(tmp_path):
    f = tmp_path / "inv.toml"
    f.write_text('[hosts.mx1]\naddress = "198.18.3.2"\ntags = ["prod"]\n')
    assert load_inventory(f).get("mx1").address == "198.18.3.2"


@pytest.mark.parametrize(
    "text, message",
    [
        ("hosts: [1, 2]", "must be a mapping"),
        ("hosts:\n  mx1:\n    address: 'a b; id'\n", "not an IP address or host name"),
        ("hosts:\n  'mx 1':\n    address: 198.18.0.2\n", "bad host name"),
        ("hosts:\n  mx1:\n    address: 198.18.0.2\n    port: 0\n", "greater than or equal to 1"),
        ("hosts:\n  mx1: {address: 198.18.0.2}\ngroups:\n  g: [mx2]\n", "unknown host 'mx2'"),
        ("hosts: {mx1: {address: [}", "does not parse"),
        ('hosts:\n  mx1: {address: 198.18.0.2, user: "root\\n"}\n', "bad user name"),
        ('hosts:\n  mx1: {address: "198.18.0.2\\n"}\n', "not an IP address or host name"),
        ('hosts:\n  "mx1\\n": {address: 198.18.0.2}\n', "bad host name"),
        ("hosts:\n  mx1: 198.18.0.2\n", "expected a mapping of its settings"),
        ("defaults: [root]\nhosts:\n  mx1: {address: 198.18.0.2}\n", "'defaults' must be a mapping"),
        ("hosts:\n  mx1: {address: 198.18.0.2, port: [22]}\n", "port"),
        ("hosts:\n  mx1: {address: 198.18.0.2, jump: mx9;id}\n", "jump 'mx9;id': not an IP address"),
        ("hosts:\n  mx1: {address: 198.18.0.2, jump: 'root@bad host'}\n", "neither an inventory host"),
        ("hosts:\n  mx1: {address: 198.18.0.2, jump: mx1}\n", "names the host itself"),
        ("hosts:\n  mx1: {address: 198.18.0.2, jump: b}\n  b: {address: 198.18.0.6, jump: c}\n"
         "  c: {address: 198.18.0.10}\n", "has a jump of its own"),
        ("hosts:\n  mx1: {address: 198.18.0.2, jump: 'root@198.18.0.6:70000'}\n", "bad port"),
    ],
)
def test_bad_inventory_is_refused_clearly(tmp_path, text, message):
    f = tmp_path / "inv.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as e:
        load_inventory(f)
    assert message in str(e.value)


def test_a_valid_jump_is_an_inventory_host_or_a_target(tmp_path):
    f = tmp_path / "inv.yaml"
    f.write_text("hosts:\n  mx1: {address: 198.18.0.2, jump: b}\n  b: {address: 198.18.0.6}\n"
                 "  mx2: {address: 198.18.0.10, jump: 'ops@bastion.example.net:2222'}\n")
    inv = load_inventory(f)
    assert inv.get("mx1").jump == "b" and inv.get("mx2").jump == "ops@bastion.example.net:2222"


def test_missing_inventory_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read inventory"):
        load_inventory(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "target", ["a;b", "root@x y", "mx1$(id)", "-oProxyCommand=x", "", "x:99999", "root@-x", "`id`", "a\nb"]
)
def test_targets_that_could_smuggle_syntax_are_refused(target):
    with pytest.raises(TargetError):
        parse_target(target, load_inventory(EXAMPLE))


def test_unknown_inventory_name_lists_known_ones():
    with pytest.raises(TargetError, match="known hosts: bastion, mx1, mx2"):
        load_inventory(EXAMPLE).get("mx7")


def test_adhoc_targets():
    inv = load_inventory(EXAMPLE)
    h = parse_target("admin@[2001:db8::1]:2200", inv)
    assert (h.user, h.address, h.port, h.use_sudo) == ("admin", "2001:db8::1", 2200, True)
    assert parse_target("mx1", inv).address == "203.0.113.10"
    assert parse_target("198.18.5.2", inv).user == "root"


def test_secrets_are_never_printed(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-value")
    monkeypatch.setenv("MAILCHECK_HTTP_PORT", "3999")
    s = Settings(_env_file=None)
    assert s.http_port == 3999
    assert s.slack_bot_token.get_secret_value() == "xoxb-secret-value"
    assert "xoxb-secret-value" not in repr(s) and "xoxb-secret-value" not in str(s)


def test_a_dotenv_others_may_write_is_refused_not_read(tmp_path, monkeypatch):
    import os

    from config.settings import load_settings
    for name in [n for n in os.environ if n.startswith("MAILCHECK_")]:
        monkeypatch.delenv(name)
    env = tmp_path / ".env"
    env.write_text("MAILCHECK_READ_ONLY=true\n")
    env.chmod(0o600)
    assert load_settings(tmp_path).read_only is True  # the operator's own .env
    env.chmod(0o666)
    with pytest.raises(ConfigError, match="may be written by others"):
        load_settings(tmp_path)
    assert load_settings(tmp_path / "elsewhere").read_only is False  # only the working directory's


def test_bad_settings_are_a_config_error(tmp_path, monkeypatch):
    from config.settings import load_settings
    monkeypatch.setenv("MAILCHECK_MAX_CHANNELS", "0")
    with pytest.raises(ConfigError, match="max_channels"):
        load_settings(tmp_path)


async def test_a_missing_identity_file_is_named(tmp_path):
    from bot.errors import AuthError
    from bot.transport import SSHTransport
    from config.inventory import Host

    (tmp_path / "known_hosts").write_text("")
    host = Host(name="mx1", address="198.18.0.2", identity_file=tmp_path / "id_missing",
                known_hosts=tmp_path / "known_hosts")
    with pytest.raises(AuthError, match="identity file .*id_missing does not exist .*identity_file of mx1"):
        await SSHTransport(host, Settings(_env_file=None)).connect()
