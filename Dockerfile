# connet in a container: `docker build -t connet .`, then see docs/deploy.md.
#
# BASE is any Debian-like image with Python >= 3.11 and the venv module (python3 -m venv).
ARG BASE=python:3.12-slim

# --- build: a virtual environment with connet and its dependencies, from this source tree ---
FROM ${BASE} AS build
# pip settings of a machine that builds behind a mirror or a proxy CA (pass them with
# --build-arg NAME); with Docker and PyPI none of them is needed. An ARG not passed stays unset.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_CLIENT_CERT
ARG PIP_CONSTRAINT
ARG PIP_DEFAULT_TIMEOUT
ARG PIP_DISABLE_PIP_VERSION_CHECK
ARG PIP_NO_CACHE_DIR=1
COPY . /src
# a wheel of this tree first (no editable install, no source in the final image), then the
# wheel and its dependencies into the venv that the final stage copies whole
RUN python3 -m venv /opt/connet \
 && /opt/connet/bin/pip wheel --no-deps --wheel-dir /wheels /src \
 && /opt/connet/bin/pip install /wheels/connet-*.whl \
 && /opt/connet/bin/pip uninstall --yes pip setuptools \
 && find /opt/connet -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/connet/bin/python -c "import connet_core, connet_quic, connet_filestore"

# --- the image: the base, the venv, a user ---
FROM ${BASE}
COPY --from=build /opt/connet /opt/connet
COPY packaging/container/healthcheck.py /opt/connet/healthcheck.py
# a fixed uid, so that a bind-mounted /data can be given to it: chown 10001 DIR
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin connet \
 && mkdir -p /data && chown connet:connet /data && chmod 0700 /data
ENV PATH=/opt/connet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONNET_SERVER__STORE_DIR=/data \
    CONNET_CONTROL__STORE_DIR=/data \
    CONNET_RELAY__STORE_DIR=/data
# /data: the store (identity and secrets across restarts) and, if you like, config files,
# certificates and token files: relative paths in a file resolve against the file's directory
VOLUME /data
WORKDIR /data
USER connet
# 19190 control, 19191 relay, 19192 a client's direct (peer) address; 443 and 8443 over TCP
# only where tcp-addr = ":443" / relay-tcp-addr = ":8443" are set (clients whose UDP is blocked;
# the non-root user binds 443 where ip_unprivileged_port_start allows it: docs/deploy.md)
EXPOSE 19190/udp 19191/udp 19192/udp 443/tcp 8443/tcp
# passes without a status endpoint; with one, GET / must answer connet's status JSON
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/connet/bin/python", "/opt/connet/healthcheck.py"]
ENTRYPOINT ["/opt/connet/bin/connet"]
CMD ["--help"]
