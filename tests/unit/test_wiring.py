"""The composition root: every entry point's connections go through one connect(host),
jump host included (before, only the engine honoured Host.jump; fixes went direct)."""

from __future__ import annotations

from pathlib import Path

from bot.engine import Engine
from bot.transport import SSHTransport
from bot.wiring import Wiring
from config.inventory import load_inventory
from config.settings import Settings

EXAMPLE = Path(__file__).parents[2] / "config" / "inventory.example.yaml"


def wiring(tmp_path) -> Wiring:
    return Wiring(Settings(_env_file=None, db_path=tmp_path / "mc.db"), load_inventory(EXAMPLE))


def test_connect_goes_through_the_jump_host(tmp_path):
    w = wiring(tmp_path)
    t = w.connect(w.inventory.get("mx2"))
    assert isinstance(t, SSHTransport) and t.host.name == "mx2"
    assert t.jump is not None and (t.jump.name, t.jump.address) == ("bastion", "198.51.100.7")
    assert t.jump.identity_file == Path("/etc/mailcheck/id_ed25519")
    assert w.connect(w.inventory.get("mx1")).jump is None


def test_checks_fixes_guard_and_rollback_all_use_that_connect(tmp_path):
    w = wiring(tmp_path)
    mx2 = w.inventory.get("mx2")
    engine = w.engine()
    assert isinstance(engine, Engine) and engine.transport_factory(mx2).jump.name == "bastion"
    svc = w.fix_service()
    assert svc.connect(mx2).jump.name == "bastion"  # rollback (restore_change) uses it
    assert svc.applier.connect(mx2).jump.name == "bastion"  # apply and the guard's fresh connection
    assert w.engine(outbound_targets="198.18.0.1:25").transport_factory(mx2).jump.name == "bastion"
    assert svc.store is w.store and w.fix_service().store is w.store


def test_only_the_wiring_builds_the_engine_the_store_and_the_fix_service():
    """No entry point wires its own: a call to these constructors appears in one module."""
    import ast

    root = Path(__file__).parents[2]
    where: dict[str, set[str]] = {}
    for pkg in ("bot", "config", "handlers"):
        for path in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    where.setdefault(node.func.id, set()).add(str(path.relative_to(root)))
    assert where["Engine"] == where["FixService"] == where["SQLiteStore"] == {"bot/wiring.py"}
    assert where["SSHTransport"] == {"bot/transport.py"}  # in ssh_connect, which the wiring uses
