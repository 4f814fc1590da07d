# syntax=docker/dockerfile:1
# svcreg's container image: `svcreg run` as a non-root user on a slim Python base.
#   docker build -t svcreg:dev .
# BASE_IMAGE selects the base. Where no registry is reachable, `svcreg image build` builds one
# from Debian's packages (python3 with a virtualenv first on PATH) and passes it here.
ARG BASE_IMAGE=python:3.12-slim
# Stage 1 installs svcreg with the operator extra, and every dependency, into a virtualenv, so
# the runtime stage needs no compiler, no pip cache and no wheels. The dev tools (svcreg dev,
# the local control plane) are not installed: they are the dev extra. The runtime stage takes
# the virtualenv with COPY --from, whose cache key is the content copied: a RUN with a bind
# mount of the build stage would be keyed by its text alone, and a layer-caching builder
# (buildah --layers) would then reuse an image of older sources.
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/svcreg \
 && /opt/svcreg/bin/pip install --no-cache-dir --disable-pip-version-check '.[operator]'

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/svcreg/bin:$PATH
RUN groupadd --gid 10001 svcreg \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin svcreg
COPY --from=build /opt/svcreg /opt/svcreg
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["svcreg"]
CMD ["run"]
