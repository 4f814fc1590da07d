# syntax=docker/dockerfile:1
# svcreg's container image: `svcreg run` as a non-root user on a slim Python base.
#   docker build -t svcreg:dev .
# BASE_IMAGE selects the base. Where no registry is reachable, `svcreg image build` builds one
# from Debian's packages (python3 with a virtualenv first on PATH) and passes it here.
ARG BASE_IMAGE=python:3.12-slim
# Stage 1 builds wheels (svcreg with the operator extra, and every dependency) so the runtime
# stage needs no compiler and no pip cache. The dev tools (svcreg dev, the local control plane)
# are not installed: they are the dev extra.
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[operator]'

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels 'svcreg[operator]' \
 && groupadd --gid 10001 svcreg \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin svcreg
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["svcreg"]
CMD ["run"]
