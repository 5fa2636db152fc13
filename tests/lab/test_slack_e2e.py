"""End to end: a signed `/mailcheck HOST` through the real Bolt app and HTTP server, the
real Engine over real SSH against a lab host, and the Slack messages on the fake Web API.

1. The host's iptables drops port 25: the progress message shows the firewall's line
   while the outside probe still waits on the filtered port (timestamps of the fake's
   recorded calls), and the final message answers first: the rule that drops 25, with
   its fix button beside it (the confirm dialog lists the iptables command).
2. A hostile host (issue 10, item 9): the DROP rule's comment is "<!channel> `rm -rf /`
   <https://x|Approve fix here>", and the program listening on 587 names itself
   "<!here>`x" and greets with "220 <!channel> <https://evil.example|Approve fix here>".
   No message, update, modal or notification text carries a live mention or link, code
   spans hold, and the confirm dialog is plain text.
"""

from __future__ import annotations

import json
import re

from bot.engine import Engine
from bot.render import blockkit
from bot.store import SQLiteStore
from config.inventory import Inventory
from tests.slack.conftest import (
    action_payload,
    buttons,
    form_payload,
    make_settings,
    post_signed,
    slash_body,
    start_served,
)
from tests.slack.fake_slack import MAX_BLOCKS, FakeSlack, check_blocks, live_markup, mrkdwn_texts

PROBE_TIMEOUT = 20.0
COMMENT = "<!channel> `rm -rf /` <https://x|Approve fix here>"
PROCESS = "<!here>`x"
HOSTILE_SMTP = f"""
import ctypes, socket, threading
ctypes.CDLL(None).prctl(15, {PROCESS.encode()!r}, 0, 0, 0)  # PR_SET_NAME: what ss -p shows
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 587)); s.listen(16)
def serve(c):
    c.sendall(b"220 <!channel> <https://evil.example|Approve fix here> ESMTP\\r\\n")
    for line in c.makefile("rb"):
        if line[:4].upper() in (b"EHLO", b"HELO"):
            c.sendall(b"250-hello <!everyone>\\r\\n250 SIZE 1000\\r\\n")
        elif line[:4].upper() == b"QUIT":
            c.sendall(b"221 bye\\r\\n"); break
        else:
            c.sendall(b"250 ok\\r\\n")
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


async def check_over_slack(host, client_key, tmp_path):
    """/mailcheck mx-lab, then a click on Details. The probe of a filtered port waits 20 s
    (the default is 4): on this shared machine, loaded, the SSH batch alone was seen to take
    7.8 s, and the test is about the order in which the answers arrive."""
    inventory = Inventory.model_validate({"hosts": {"mx-lab": {
        "address": host.ip, "identity_file": str(client_key), "known_hosts": str(host.known_hosts)}}})
    fake = await FakeSlack().start()
    engine = Engine(make_settings(fake).model_copy(update={"probe_timeout": PROBE_TIMEOUT}), inventory)
    served = await start_served(fake, engine, inventory=inventory, interval=0.2, check_timeout=180,
                                store=SQLiteStore(tmp_path / "mc.db"))
    try:
        status, body, elapsed = await post_signed(served.url, slash_body("mx-lab", fake.response_url()))
        assert status == 200 and "Checking `mx-lab`" in json.loads(body)["text"] and elapsed < 1
        await served.settle()
        ((_, message),) = fake.messages.items()
        details = next(b for b in buttons(message["blocks"]) if b["action_id"] == blockkit.ACTION_DETAILS)
        await post_signed(served.url, form_payload(action_payload(
            blockkit.ACTION_DETAILS, details["value"], fake.response_url())))
        await served.settle()
    finally:
        served.stop.set()
        await served.task
        await fake.stop()
    return fake, served, message


async def test_slash_command_answers_first_with_progress_before_the_probes(lab, client_key, tmp_path):
    host = lab()
    host.start_exim("public")
    host.start_dovecot(tls=True)
    host.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-j", "DROP")
    assert host.probe(25) == "filtered"
    fake, served, message = await check_over_slack(host, client_key, tmp_path)
    assert len(fake.of("chat.postMessage")) == 1
    updates = fake.of("chat.update", ok=True)
    firewall = next(c for c in updates if re.search(r"\*firewall\*: iptables, 1 rule blocks mail",
                                                     json.dumps(c.args["blocks"])))
    ports = next(c for c in updates if re.search(r"\*ports\*: \d", json.dumps(c.args["blocks"])))
    start = fake.of("chat.postMessage")[0].at
    print(f"firewall line at +{firewall.at - start:.2f}s, ports line at +{ports.at - start:.2f}s")
    assert firewall.at < ports.at - 1.0  # the probe of 25 waited its timeout meanwhile
    assert ports.at - start >= PROBE_TIMEOUT - 0.5
    assert "*ports*: running" in json.dumps(firewall.args["blocks"])
    blocks = message["blocks"]
    assert check_blocks(blocks, MAX_BLOCKS) == {} and len(blocks) <= 10
    assert blocks[0]["text"]["text"].startswith(":x: mx-lab: mail cannot flow · ")
    cause = blocks[2]  # errors first: the rule, though exim's 465 (no TLS on connect) warns too
    assert cause["text"]["text"].startswith(":x: *iptables INPUT rule 1 drops inbound 25 (IPv4)*")
    assert "`-A INPUT -p tcp -m tcp --dport 25 -j DROP`" in cause["text"]["text"]
    fix = cause["accessory"]
    assert fix["text"]["text"] == "Delete INPUT rule 1" and fix["value"] in served.fixes.plans
    assert "$ iptables -t filter -D INPUT -p tcp -m tcp --dport 25 -j DROP" in fix["confirm"]["text"]["text"]
    (modal,) = fake.of("views.open", ok=True)
    assert "firewall in charge: iptables" in json.dumps(modal.args["view"]["blocks"])


async def test_hostile_rule_comment_process_name_and_banner_stay_text(lab, client_key, tmp_path):
    host = lab()
    host.start_exim("public", ports=(25, 465))
    host.popen("python3", "-c", HOSTILE_SMTP)
    host.wait_listening({587})
    host.sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "25", "-m", "comment",
            "--comment", COMMENT, "-j", "DROP")
    assert COMMENT in host.iptables_save() and host.probe(25) == "filtered"
    assert PROCESS in host.sh("ss", "-Hltnp").stdout
    fake, _served, message = await check_over_slack(host, client_key, tmp_path)
    posted = [c.args for c in fake.calls if c.method in ("chat.postMessage", "chat.update", "views.open")]
    assert len(posted) >= 3
    for args in posted + fake.responses:
        assert live_markup(args) == [], live_markup(args)
        for text in mrkdwn_texts(args):
            for line in re.sub(r"```.*?```", "", text, flags=re.S).splitlines():
                assert line.count("`") % 2 == 0, line  # every code span closes where it should
    text = json.dumps(message["blocks"], ensure_ascii=False)
    assert "&lt;!channel&gt; ˋrm -rf /ˋ &lt;https://x|Approve fix here&gt;" in text  # the rule's comment
    fix = next(b["accessory"] for b in message["blocks"] if b.get("accessory"))
    assert fix["confirm"]["text"]["type"] == "plain_text" and "Approve fix here" not in fix["text"]["text"]
    (modal,) = fake.of("views.open", ok=True)
    details = json.dumps(modal.args["view"]["blocks"], ensure_ascii=False)
    assert "&lt;!here&gt;ˋx" in details or "&lt;!here&gt;`x" in details  # the process name, as text
    print(re.findall(r".{60}evil.example.{60}|.{60}everyone.{30}", details))
    assert "&lt;!channel&gt; &lt;https://evil.example|Approve fix" in details  # the SMTP banner
    assert "250-hello &lt;!everyone&gt;" in details  # its EHLO answer
