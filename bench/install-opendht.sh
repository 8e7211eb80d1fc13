#!/bin/sh
# Install OpenDHT (Debian's dhtnode + python3-opendht) for the loopback comparison
# without letting it join the public OpenDHT network.
#
# The Debian package enables dhtnode.service with DHT_ARGS="-b bootstrap.ring.cx -p 4222"
# (/etc/default/dhtnode): on a systemd host it would start and join the public network at
# install time. So: a policy-rc.d that forbids service starts during the install, then the
# bootstrap is rewritten to loopback and the service is disabled (and stopped, if it ran).
# Idempotent; needs root.
set -eu

if [ "$(id -u)" != 0 ]; then
  echo "install-opendht.sh: needs root (apt-get, and unshare -n for the benchmarks)" >&2
  exit 1
fi

if ! dpkg -s dhtnode python3-opendht >/dev/null 2>&1; then
  POLICY=/usr/sbin/policy-rc.d
  OWN_POLICY=""
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary: no service starts during install-opendht.sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    OWN_POLICY=1
  fi
  # shellcheck disable=SC2064
  trap "if [ -n '$OWN_POLICY' ]; then rm -f '$POLICY'; fi" EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dhtnode python3-opendht \
    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dhtnode python3-opendht; }
fi

# Never let the packaged service reach the public bootstrap node.
if [ -f /etc/default/dhtnode ] && grep -q 'bootstrap.ring.cx' /etc/default/dhtnode; then
  sed -i 's/-b *bootstrap\.ring\.cx/-b 127.0.0.1:4222/' /etc/default/dhtnode
fi
rm -f /etc/systemd/system/multi-user.target.wants/dhtnode.service
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now dhtnode.service >/dev/null 2>&1 || true
fi
if grep -q 'bootstrap.ring.cx' /etc/default/dhtnode 2>/dev/null; then
  echo "install-opendht.sh: /etc/default/dhtnode still names bootstrap.ring.cx" >&2
  exit 1
fi
/usr/bin/python3 -c 'import opendht' || { echo "install-opendht.sh: python3-opendht not importable by /usr/bin/python3" >&2; exit 1; }
