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
