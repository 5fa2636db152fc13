"""Fleet selectors (config/inventory.py): all, group:NAME, tag:NAME pick inventory hosts in
the inventory's order; a bad or empty one is a clear TargetError that names what exists."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError, TargetError
from config.inventory import Inventory, is_selector, load_inventory, resolve_target, select_hosts

INV = Inventory.model_validate({
    "hosts": {"mx1": {"address": "198.18.1.2", "tags": ["eu", "prod"]},
              "mx2": {"address": "198.18.2.2", "tags": ["us"]},
              "mx3": {"address": "198.18.3.2", "tags": ["eu"]},
              "relay": {"address": "198.18.4.2"}},
    "groups": {"mail": ["mx3", "mx1", "mx3"], "empty": []},
})


def names(selector: str) -> list[str]:
    return [h.name for h in select_hosts(selector, INV)]


def test_all_group_and_tag_select_in_order():
    assert names("all") == ["mx1", "mx2", "mx3", "relay"]
    assert names("group:mail") == ["mx3", "mx1"]  # the group's order, each host once
    assert names("tag:eu") == ["mx1", "mx3"]
    assert names("tag:prod") == ["mx1"]


@pytest.mark.parametrize("selector, message", [
    ("group:nope", "no group 'nope' in the inventory (groups: empty, mail)"),
    ("group:empty", "group 'empty' has no hosts"),
    ("tag:asia", "no inventory host has tag 'asia' (tags: eu, prod, us)"),
    ("group:", "malformed selector 'group:': expected all, group:NAME or tag:NAME"),
    ("tag:  ", "malformed selector"),
])
def test_a_bad_selector_names_what_exists(selector, message):
    with pytest.raises(TargetError) as e:
        select_hosts(selector, INV)
    assert message in str(e.value)


def test_all_of_an_empty_inventory_says_where_the_inventory_comes_from():
    with pytest.raises(TargetError, match="the inventory is empty .*MAILCHECK_INVENTORY"):
        select_hosts("all", Inventory())


def test_selectors_are_told_from_host_targets():
    assert all(map(is_selector, ["all", "group:mail", "tag:eu", "group:"]))
    assert not any(map(is_selector, ["mx1", "allx", "root@group", "198.18.1.2", "tags:eu"]))


def test_fixes_refuse_a_selector_one_host_at_a_time():
    for target in ("all", "group:mail", "tag:eu"):
        with pytest.raises(TargetError, match="a fix is made one host at a time"):
            resolve_target(target, INV)


@pytest.mark.parametrize("name", ["all", "group:x", "tag:y"])
def test_a_host_named_like_a_selector_is_refused_at_load(tmp_path, name):
    f = tmp_path / "inv.yaml"
    f.write_text(f"hosts:\n  '{name}':\n    address: 198.18.0.2\n")
    with pytest.raises(ConfigError, match="reads as a selection of hosts"):
        load_inventory(f)


def test_the_cli_refuses_a_bad_selection_before_connecting_anywhere(tmp_path):
    from tests.unit.test_cli import mailcheck

    inv = tmp_path / "inventory.yaml"
    inv.write_text("hosts:\n  mx1: {address: 198.18.200.2, tags: [eu]}\ngroups:\n  mail: [mx1]\n")
    for target, message in (("group:mial", "no group 'mial' in the inventory (groups: mail)"),
                            ("tag:us", "no inventory host has tag 'us' (tags: eu)"),
                            ("tag:", "malformed selector 'tag:': expected all, group:NAME or tag:NAME")):
        r = mailcheck("check", target, inventory=inv)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == f"mailcheck: {message}\n"  # nothing checked, nothing else said
    r = mailcheck("check", "all", "--local", inventory=inv)
    assert r.returncode == 2 and "--local are for one ad-hoc host" in r.stderr
    r = mailcheck("fix", "group:mail", inventory=inv)
    assert r.returncode == 2 and "a fix is made one host at a time" in r.stdout + r.stderr


def test_the_fd_soft_limit_is_raised_to_the_hard_limit_and_said():
    """In a child whose soft limit is 256 (the hard limit unchanged)."""
    import resource
    import subprocess
    import sys

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    code = ("from bot.fleet import raise_nofile, fitting_concurrency; import resource\n"
            "got = raise_nofile(); print(got.describe());"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0]);"
            "print(fitting_concurrency(50, 256, in_use=10))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    said, soft, fit = r.stdout.splitlines()
    expected = hard if hard != resource.RLIM_INFINITY else int(open("/proc/sys/fs/nr_open").read())
    assert said == f"file descriptors: soft limit raised from 256 to {expected}" and int(soft) == expected
    assert int(fit) == (256 - 10 - 64) // 16  # 11 hosts fit in 256 descriptors, not 50
