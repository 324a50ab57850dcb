"""Test certificates, made at test time with the `openssl` command.

make_certs(directory) writes, all PEM and valid for two days:
- ca.pem / ca.key: the CA ipamd and its clients trust;
- server.pem / server.key: signed by it, for 127.0.0.1, ::1 and localhost;
- client.pem / client.key: signed by it, for client authentication;
- other-ca.pem / other-ca.key: a second CA that nobody trusts;
- other-client.pem / other-client.key: a client certificate signed by that one.
It returns a namespace of the paths (ca, ca_key, server, server_key, client,
client_key, other_ca, other_ca_key, other_client, other_client_key).
"""

import shutil
import subprocess
import types
from pathlib import Path

OPENSSL_TIMEOUT = 30

# P-256 keys: quick to make, and every TLS stack here takes them.
KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl_available():
    return shutil.which("openssl") is not None


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=OPENSSL_TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")


def _ca(d, name, cn):
    _openssl("req", "-x509", *KEY_ARGS, "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d, name, cn, ca, usage, san=None):
    """A certificate signed by ca (OpenSSL 3's `req -x509 -CA`)."""
    ext = ["-addext", "basicConstraints=critical,CA:FALSE",
           "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
           "-addext", f"extendedKeyUsage={usage}"]
    if san:
        ext += ["-addext", f"subjectAltName={san}"]
    _openssl("req", "-x509", *KEY_ARGS, "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={cn}", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             *ext, cwd=d)


def make_certs(directory):
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca", "ipamd test CA")
    _ca(d, "other-ca", "untrusted test CA")
    _leaf(d, "server", "localhost", "ca", "serverAuth",
          "DNS:localhost,IP:127.0.0.1,IP:::1")
    _leaf(d, "client", "ipamd test client", "ca", "clientAuth")
    _leaf(d, "other-client", "untrusted test client", "other-ca", "clientAuth")
    paths = {}
    for name in ("ca", "server", "client", "other-ca", "other-client"):
        key = name.replace("-", "_")
        paths[key] = d / f"{name}.pem"
        paths[f"{key}_key"] = d / f"{name}.key"
    return types.SimpleNamespace(**paths)
