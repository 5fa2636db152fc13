#!/bin/sh
# firewalld inside one lab host (run it inside the host's network namespace):
#   sh lab_firewalld.sh WORKDIR
# firewalld needs a D-Bus system bus: a private one listens on WORKDIR/dbus/bus
# (LabHost.sh points DBUS_SYSTEM_BUS_ADDRESS at it whenever it exists). firewalld
# runs in a private mount namespace where /etc/firewalld is a copy under WORKDIR
# and /run/firewalld a tmpfs, so --permanent changes never reach the real /etc.
set -eu
W=$1
mkdir -p "$W/dbus" "$W/firewalld-etc"
cp -a /etc/firewalld/. "$W/firewalld-etc/"
cat > "$W/dbus/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$W/dbus/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$W/dbus/bus.conf" --fork --nopidfile
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$W/dbus/bus"
unshare -m --propagation private sh -c "
  mount --bind '$W/firewalld-etc' /etc/firewalld
  mount -t tmpfs tmpfs /run/firewalld 2>/dev/null || { mkdir -p /run/firewalld && mount -t tmpfs tmpfs /run/firewalld; }
  exec firewalld --nopid --log-target file --log-file '$W/firewalld.log'
" </dev/null >/dev/null 2>&1
i=0
until [ "$(firewall-cmd --state 2>/dev/null)" = running ]; do
  i=$((i+1)); [ $i -gt 100 ] && { echo "firewalld did not start" >&2; cat "$W/firewalld.log" >&2; exit 1; }
  sleep 0.2
done
