"""A fake cloud metadata service, run inside a lab host's namespace (never outside it).

    python3 tests/labmetadata.py PROVIDER [ADDRESS]

The lab test puts 169.254.169.254/32 on the namespace's own `lo` and starts this
there (LabHost.popen): only programs inside that namespace can reach it, and the
address is routed nowhere else. It answers as PROVIDER's service does, and enforces
what that service requires, so a wrong or missing header gets the real service's
refusal, not the data:

- aws: IMDSv2 only. PUT /latest/api/token needs `X-aws-ec2-metadata-token-ttl-seconds`;
  GET /latest/dynamic/instance-identity/document needs `X-aws-ec2-metadata-token` with
  that token (401 otherwise).
- gcp: GET /computeMetadata/v1/instance/zone needs `Metadata-Flavor: Google` (403
  otherwise); the answer carries `Metadata-Flavor: Google`.
- azure: GET /metadata/instance/compute?api-version=... needs `Metadata: true` (400).
- digitalocean: GET /metadata/v1.json. hetzner: GET /hetzner/v1/metadata.

Each request is logged to stderr (method, path, whether the required header came).
"""

from __future__ import annotations

import json
import secrets
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PROVIDER = sys.argv[1]
ADDRESS = sys.argv[2] if len(sys.argv) > 2 else "169.254.169.254"
TOKEN = secrets.token_urlsafe(32)
AWS_DOC = {"accountId": "000000000000", "architecture": "x86_64", "availabilityZone": "eu-west-1a",
           "imageId": "ami-0lab", "instanceId": "i-0123456789abcdef0", "instanceType": "t3.micro",
           "privateIp": "198.18.0.2", "region": "eu-west-1", "version": "2017-09-30"}


class Handler(BaseHTTPRequestHandler):
    def answer(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # noqa: N802 - http.server's name
        if PROVIDER == "aws" and self.path == "/latest/api/token":
            if self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "").isdigit():
                return self.answer(200, TOKEN)
            return self.answer(400, "Missing or Invalid Parameters")
        return self.answer(404, "Not Found")

    def do_GET(self) -> None:  # noqa: N802
        route = {
            "aws": self.aws, "gcp": self.gcp, "azure": self.azure,
            "digitalocean": self.digitalocean, "hetzner": self.hetzner,
        }[PROVIDER]
        route()

    def aws(self) -> None:
        if self.path != "/latest/dynamic/instance-identity/document":
            return self.answer(404, "Not Found")
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return self.answer(401, "Unauthorized")
        return self.answer(200, json.dumps(AWS_DOC), {"Content-Type": "application/json"})

    def gcp(self) -> None:
        if self.path != "/computeMetadata/v1/instance/zone":
            return self.answer(404, "Not Found", {"Metadata-Flavor": "Google"})
        if self.headers.get("Metadata-Flavor") != "Google":
            return self.answer(403, "Missing Metadata-Flavor:Google header.")
        return self.answer(200, "projects/123456789012/zones/europe-west1-b", {"Metadata-Flavor": "Google"})

    def azure(self) -> None:
        if not self.path.startswith("/metadata/instance/compute?api-version="):
            return self.answer(404, "Not Found")
        if self.headers.get("Metadata") != "true":
            return self.answer(400, json.dumps({"error": "Bad request. Required metadata header "
                                                          "not specified"}))
        return self.answer(200, json.dumps({"location": "westeurope", "azEnvironment": "AzurePublicCloud",
                                            "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6"}),
                           {"Content-Type": "application/json"})

    def digitalocean(self) -> None:
        if self.path != "/metadata/v1.json":
            return self.answer(404, "Not Found")
        return self.answer(200, json.dumps({"droplet_id": 2756294, "hostname": "lab", "region": "ams3"}),
                           {"Content-Type": "application/json"})

    def hetzner(self) -> None:
        if self.path != "/hetzner/v1/metadata":
            return self.answer(404, "Not Found")
        return self.answer(200, "availability-zone: fsn1-dc14\nhostname: lab\ninstance-id: 12345678\n"
                                "public-ipv4: 198.18.0.2\nregion: eu-central\n")

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.command} {self.path} " + " ".join(
            f"{h}={'yes' if self.headers.get(h) else 'no'}" for h in (
                "X-aws-ec2-metadata-token-ttl-seconds", "X-aws-ec2-metadata-token", "Metadata-Flavor",
                "Metadata")) + "\n")
        sys.stderr.flush()


if __name__ == "__main__":
    HTTPServer((ADDRESS, 80), Handler).serve_forever()
