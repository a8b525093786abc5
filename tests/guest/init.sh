#!/bin/sh
# First process of a User-Mode Linux guest whose root is the host's / (hostfs): the
# guest's own /proc, /sys, /dev and tmpfs over /run, /tmp and /dev/shm (so nothing the guest
# makes there reaches the host), then the job (tests.guest.inside), its status written
# where the host reads it, and power off. Its parameters arrive as environment variables
# from the kernel's command line (tests/guest/machine.py).
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
cd "$LOCALVOL_GUEST_REPO" || poweroff -f
"$LOCALVOL_GUEST_PYTHON" -m tests.guest.inside >"$LOCALVOL_GUEST_OUT/job.log" 2>&1
echo "$?" >"$LOCALVOL_GUEST_OUT/status.tmp" && mv "$LOCALVOL_GUEST_OUT/status.tmp" "$LOCALVOL_GUEST_OUT/status"
sync
poweroff -f
