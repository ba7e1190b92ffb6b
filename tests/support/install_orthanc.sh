#!/bin/sh
# Install Orthanc, its DICOMweb and GDCM plug-ins (Debian) for the PACS ingest test — without ever
# starting the Debian service: Orthanc 1.10 listens on every interface, so it may only run inside
# the test's own network namespace. A policy-rc.d (Debian policy: exit 101 = "do not start")
# stops the package scripts from starting it, and the service is disabled at boot.
set -e
PLUGINS=/usr/share/orthanc/plugins
if command -v Orthanc >/dev/null 2>&1 && [ -e "$PLUGINS/libOrthancDicomWeb.so" ] && [ -e "$PLUGINS/libOrthancGdcm.so" ]; then
    exit 0
fi
own_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
fi
trap 'if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb orthanc-gdcm
if command -v systemctl >/dev/null 2>&1; then systemctl disable orthanc >/dev/null 2>&1 || true; fi
update-rc.d orthanc disable >/dev/null 2>&1 || true
