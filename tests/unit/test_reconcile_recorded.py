"""Reconcile of a plan left `claimed` whose change row already holds a final state.

The apply records its end in two transactions (service._apply_locked): the change row
(started -> applied) and then the plan (claimed -> applied). When the store drops between
the two (a PostgreSQL restart, a lost connection), the fix is in effect on the host and
its change row says so, but the plan stays `claimed`; reconcile must not then say that
"nothing was changed on the host".
"""

from __future__ import annotations

import time

from bot.fixes.reconcile import Reconciler
from bot.store import ChangeRecord, PlanRecord, SQLiteStore
from tests.unit.fixtures_fixes import fix, inventory


async def test_a_claimed_plan_whose_change_was_recorded_applied_is_not_called_unchanged(tmp_path):
    store = SQLiteStore(tmp_path / "mc.db")
    now = time.time()
    host = inventory().get("mx1")
    await store.add_plan(PlanRecord(id="p1", host=host, fix=fix(), digest="d" * 64,
                                    requested_by="slack:UREQ", channel="C1",
                                    created_at=now - 120, expires_at=now + 600))
    assert await store.claim_plan("p1", "slack:UAPP", now - 60)
    await store.add_change(ChangeRecord(id="c1", plan_id="p1", host=host, fix=fix(),
                                        applied_by="slack:UAPP", applied_at=now - 50,
                                        backup_dir="/b", state="started"))
    # _finish_change committed; set_plan_state did not (the store dropped in between)
    await store.update_change((await store.get_change("c1")).model_copy(update={"state": "applied"}))

    [r] = await Reconciler(store, applier=None, inventory=inventory()).run(now)

    assert "nothing was changed" not in r.message, r.message
    assert r.status == "applied", (r.status, r.message)
    assert (await store.get_plan("p1")).state == "applied"
    assert (await store.get_change("c1")).state == "applied"
    await store.close()
