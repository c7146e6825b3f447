# The operator image the Helm chart runs (ghcr.io/modelrollout/modelrollout).
# It cannot be built on the development machines (no Docker engine there); build it with
#   docker build -t ghcr.io/modelrollout/modelrollout:0.1.0 .
# It runs as uid 65532 with a read-only root filesystem: only /tmp is written (an emptyDir).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
ENTRYPOINT ["modelrollout"]
CMD ["run"]
