# The driver's container image: Python on Debian bookworm, the host tools the driver runs
# (csi/host/tools.py lists them; tests/manifests checks this file against that list), and
# the package itself. Build: docker build -t localvol-csi:dev .
FROM python:3.11.11-slim-bookworm

# Versions as in Debian 12 (bookworm); bump them together with the base image.
ARG MOUNT_VERSION=2.38.1-5+deb12u3
ARG E2FSPROGS_VERSION=1.47.0-2+b2
ARG XFSPROGS_VERSION=6.1.0-1

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      mount=${MOUNT_VERSION} \
      util-linux=${MOUNT_VERSION} \
      e2fsprogs=${E2FSPROGS_VERSION} \
      xfsprogs=${XFSPROGS_VERSION} \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY deploy/image/requirements.txt /src/deploy/image/requirements.txt
RUN pip install --no-cache-dir --no-deps -r deploy/image/requirements.txt
COPY pyproject.toml README.md /src/
COPY csi /src/csi
RUN pip install --no-cache-dir --no-deps /src && rm -rf /src

WORKDIR /
# Runs as root: loop devices, mkfs and mount need it (the DaemonSet also makes it privileged).
ENTRYPOINT ["localvol-csi"]
CMD ["--endpoint=unix:///csi/csi.sock", "--data-dir=/var/lib/localvol-csi"]
