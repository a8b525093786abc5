# The driver's container image: Debian 12 (bookworm) with Debian's own Python, the packages of
# deploy/image/packages.txt (among them the host tools csi/host/tools.py lists), and a venv
# holding deploy/image/requirements.txt and the package. hack/images builds the same image
# without Docker (debootstrap, umoci, skopeo) from the same two lists; tests/manifests checks
# that both keep reading them. Build: docker build -t localvol-csi:dev .
# The point release matches base-files in packages.txt; bump them together.
FROM debian:12.15-slim

COPY deploy/image/packages.txt /tmp/packages.txt
RUN apt-get update \
 && sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' /tmp/packages.txt \
    | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt

# A venv of Debian's python3: nothing is mixed into the system's dist-packages (so no
# --break-system-packages), and pip runs from Debian's wheel of it, leaving no pip command.
ENV PATH=/opt/localvol-csi/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /src
COPY deploy/image/requirements.txt /src/deploy/image/requirements.txt
RUN python3 -m venv --without-pip /opt/localvol-csi \
 && python "$(ls /usr/share/python-wheels/pip-*.whl)/pip" install --no-cache-dir --no-deps \
      --disable-pip-version-check --root-user-action=ignore -r deploy/image/requirements.txt
COPY pyproject.toml README.md /src/
COPY csi /src/csi
RUN python "$(ls /usr/share/python-wheels/pip-*.whl)/pip" install --no-cache-dir --no-deps \
      --disable-pip-version-check --root-user-action=ignore /src \
 && rm -rf /src

WORKDIR /
# Runs as root: loop devices, mkfs and mount need it (the DaemonSet also makes it privileged).
ENTRYPOINT ["localvol-csi"]
CMD ["--endpoint=unix:///csi/csi.sock", "--data-dir=/var/lib/localvol-csi"]
