# mailcheck: the Slack bot (`mailcheck serve`) as a non-root container.
#
# Nothing secret is baked in. Mount at run time:
#   /etc/mailcheck/         inventory.yaml, the SSH key and known_hosts it names (read-only)
#   /var/lib/mailcheck/     the SQLite audit log and pending plans (writable)
# and pass SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET and (Socket Mode) SLACK_APP_TOKEN
# as environment variables, e.g.
#   podman run -d -v /srv/mailcheck/etc:/etc/mailcheck:ro -v mailcheck-data:/var/lib/mailcheck \
#     --env-file /srv/mailcheck/slack.env -p 3000:3000 localhost/mailcheck
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python3 -m venv /opt/mailcheck
COPY pyproject.toml README.m[d] /src/
COPY bot /src/bot
COPY config /src/config
COPY handlers /src/handlers
# Behind a TLS-intercepting proxy: mount its CA bundle into the build (podman build
# -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro) and pass
# --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt; nothing of it stays in the image.
ARG PIP_CERT=""
RUN test -f /src/README.md || echo "mailcheck" > /src/README.md; \
    if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi; \
    /opt/mailcheck/bin/pip install /src && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/mailcheck --no-create-home \
        --shell /usr/sbin/nologin mailcheck \
    && mkdir -p /etc/mailcheck /var/lib/mailcheck && chown mailcheck:mailcheck /var/lib/mailcheck

ENV PATH=/opt/mailcheck/bin:$PATH \
    MAILCHECK_INVENTORY=/etc/mailcheck/inventory.yaml \
    MAILCHECK_DB_PATH=/var/lib/mailcheck/mailcheck.db \
    MAILCHECK_HTTP_PORT=3000
VOLUME ["/etc/mailcheck", "/var/lib/mailcheck"]
# mailcheck reads a .env from its working directory: the read-only configuration, never the
# writable data volume (where a planted .env could change its settings).
WORKDIR /etc/mailcheck
USER mailcheck
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MAILCHECK_HTTP_PORT', '3000'), timeout=4)"]
ENTRYPOINT ["mailcheck"]
CMD ["serve"]
