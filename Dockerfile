# The netpol-auditor operator image: `netpol-auditor run` on a slim Python base, as a non-root user.
# Stage 1 builds the project's wheel (the same `pip wheel --no-deps .` the tests check) and installs it into a
# virtualenv beside its dependencies, which come from requirements.lock only, each checked against its hashes;
# `pip check` proves the lock satisfies the wheel. Stage 2 is the base image plus that virtualenv, nothing else.
# Pinned by tag for people and by digest (the multi-architecture index) for the builder: a rebuilt tag cannot slip in.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/netpol-auditor \
    && /opt/netpol-auditor/bin/pip install --require-hashes --no-deps -r requirements.lock \
    && /opt/netpol-auditor/bin/pip install --no-deps /wheels/netpol_auditor-*.whl \
    && /opt/netpol-auditor/bin/pip check \
    && /opt/netpol-auditor/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="netpol-auditor" \
      org.opencontainers.image.description="Kubernetes operator that checks NetworkPolicies are really enforced" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/netpol-auditor/netpol-auditor"
COPY --from=build /opt/netpol-auditor /opt/netpol-auditor
ENV PATH=/opt/netpol-auditor/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The chart's restricted securityContext runs the same UID; the root filesystem may be read-only.
USER 65532:65532
EXPOSE 9090 8080
ENTRYPOINT ["netpol-auditor", "run"]
