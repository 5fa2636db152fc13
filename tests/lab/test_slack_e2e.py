"""End to end: a signed `/mailcheck HOST` through the real Bolt app and HTTP
server, the real Engine over real SSH against a lab host whose iptables drops
port 25, and the final Slack message (on the fake Web API) names the blocking
rule and offers its fix button.
The fix button's confirm dialog lists the iptables command that opens port 25.
"""

from __future__ import annotations

import json

from bot.engine import Engine
from config.inventory import Inventory
from tests.slack.conftest import buttons, make_settings, post_signed, slash_body, start_served
from tests.slack.fake_slack import MAX_BLOCKS, FakeSlack, check_blocks


async def test_slash_command_finds_the_blocking_rule_and_offers_its_fix(lab, client_key):
    host = lab()
    host.start_exim("public")
    host.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
    assert host.probe(25) == "filtered"
    inventory = Inventory.model_validate({"hosts": {"mx-lab": {
        "address": host.ip, "identity_file": str(client_key), "known_hosts": str(host.known_hosts)}}})
    fake = await FakeSlack().start()
    engine = Engine(make_settings(fake), inventory)
    served = await start_served(fake, engine, inventory=inventory, interval=0.2, check_timeout=120)
    try:
        status, body, elapsed = await post_signed(served.url, slash_body("mx-lab", fake.response_url()))
        assert status == 200 and "Checking `mx-lab`" in json.loads(body)["text"] and elapsed < 1
        await served.settle()
    finally:
        served.stop.set()
        await served.task
        await fake.stop()
    assert len(fake.of("chat.postMessage")) == 1
    ((_, message),) = fake.messages.items()
    blocks = message["blocks"]
    text = json.dumps(blocks, ensure_ascii=False)
    assert check_blocks(blocks, MAX_BLOCKS) == {}
    assert "mx-lab: mail cannot flow" in blocks[0]["text"]["text"]
    assert "--dport 25 -j DROP" in text, text  # the blocking rule, as iptables shows it
    applies = [e for e in buttons(blocks) if e["action_id"].startswith("mailcheck_apply")]
    assert applies and {e["value"] for e in applies} <= set(served.fixes.plans)
    fw_fix = [e for e in applies if "iptables" in e["confirm"]["text"]["text"]]
    assert fw_fix, "no firewall fix offered; buttons: " + "; ".join(e["text"]["text"] for e in applies)
    confirm = fw_fix[0]["confirm"]["text"]["text"]
    assert "iptables" in confirm and "25" in confirm
    assert fw_fix[0]["value"] in served.fixes.plans
