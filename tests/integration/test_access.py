"""Who can reach ipamd, and what one client can make it hold: Unix socket modes,
loopback-only TCP unless --allow-remote, TLS and mutual TLS (certificates made at
test time with openssl), the clients' TLS flags, the Watch stream cap, and Watch
consumers that stop reading.

Every listener is a Unix socket in a temporary directory or 127.0.0.1 port 0 (the
port ipamd got is read from its log); the one test that binds a wildcard address
does it inside a network namespace of its own, where no other host exists."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

import certs as certs_mod
from ipam_client import CHANNEL_OPTIONS, IpamClient, ipamd_binary, tcp_port

RUN_TIMEOUT = 30
UNAVAILABLE = 14
USAGE = 2


def run(argv, env=None, timeout=RUN_TIMEOUT):
    """Runs a program expecting it to exit by itself; returns (code, stderr + stdout)."""
    full_env = dict(os.environ)
    full_env.pop("IPAMD_ADDR", None)
    for k in list(full_env):
        if k.startswith("IPAMCTL_TLS_"):
            del full_env[k]
    full_env.update(env or {})
    p = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout, env=full_env)
    return p.returncode, p.stderr + p.stdout


def mode_of(path):
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode), f"{path} is not a socket"
    return stat.S_IMODE(st.st_mode)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not certs_mod.openssl_available():
        pytest.fail("the openssl command is not installed (scripts/deps installs it)",
                    pytrace=False)
    return certs_mod.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def adapter_path():
    path = Path(os.environ.get("K8S_ADAPTER",
                               ipamd_binary().parents[1] / "k8s-adapter" / "k8s-adapter"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"k8s-adapter not found at {path} (set K8S_ADAPTER or build it first)",
                    pytrace=False)
    return path


def tls_args(certs, mutual=False):
    args = ["--listen", "127.0.0.1:0", "--tls-cert", certs.server, "--tls-key", certs.server_key]
    if mutual:
        args += ["--tls-client-ca", certs.ca]
    return tuple(str(a) for a in args)


def tls_client(pb, target, ca=None, cert=None, key=None):
    """An IpamClient whose channel is TLS (Python's grpc, not our library)."""
    c = IpamClient(target, pb)
    c.close()
    creds = grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes() if ca else None,
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None)
    c.channel = grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS)
    return c


def health_over(client):
    try:
        return client.health.Check(service="", timeout=5).status
    finally:
        client.close()


def refused(client):
    """The RpcError of a health check that must fail."""
    with pytest.raises(grpc.RpcError) as e:
        health_over(client)
    return e.value


# --------------------------------------------------------------------------
# Unix socket modes.
# --------------------------------------------------------------------------

def test_unix_sockets_are_owner_and_group_only_by_default_whatever_the_umask(ipamd_factory, pb):
    """The socket never exists with more access than its mode, not even while ipamd
    starts under umask 0: a thread watches the path the whole time."""
    seen = set()
    done = threading.Event()
    d = ipamd_factory(start=False)

    def watch():
        while not done.is_set():
            try:
                seen.add(stat.S_IMODE(os.lstat(d.socket).st_mode))
            except FileNotFoundError:
                pass

    t = threading.Thread(target=watch, daemon=True)
    old = os.umask(0)
    try:
        t.start()
        d.start()
    finally:
        os.umask(old)
        done.set()
        t.join(timeout=10)
    assert mode_of(d.socket) == 0o660
    assert seen == {0o660}, f"modes seen while starting: {sorted(map(oct, seen))}"


def test_socket_mode_sets_the_mode_of_every_unix_socket(ipamd_factory, tmp_path):
    second = tmp_path / "second.sock"
    d = ipamd_factory(extra_args=("--socket-mode", "0600", "--listen", f"unix:{second}"))
    assert mode_of(d.socket) == 0o600
    assert mode_of(second) == 0o600
    assert d.client.health.Check(service="").status == d.pb.health.HealthCheckResponse.SERVING


def test_socket_mode_without_a_leading_zero_is_octal_too(ipamd_factory):
    d = ipamd_factory(extra_args=("--socket-mode", "666"))
    assert mode_of(d.socket) == 0o666


@pytest.mark.parametrize("bad", ["999", "0x1ff", "1777", "07777", "", "rw-rw----", "-600"])
def test_a_bad_socket_mode_is_a_usage_error_naming_it(ipamd_path, tmp_path, bad):
    code, err = run([ipamd_path, "--listen", f"unix:{tmp_path}/s.sock", "--socket-mode", bad,
                     "--data-dir", tmp_path / "data"])
    assert code == USAGE
    assert f"--socket-mode `{bad}' is not an octal permission mode" in err
    assert not (tmp_path / "s.sock").exists()


# --------------------------------------------------------------------------
# TCP: loopback only, unless --allow-remote.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("addr, named", [
    ("0.0.0.0:0", "0.0.0.0 is not a loopback address"),
    ("[::]:0", ":: is not a loopback address"),
    (":0", "no host means every interface"),
    ("192.0.2.1:0", "192.0.2.1 is not a loopback address"),
    ("[2001:db8::1]:0", "2001:db8::1 is not a loopback address"),
    ("no-such-host.invalid:0", "cannot resolve `no-such-host.invalid'"),
])
def test_a_listener_other_hosts_could_reach_is_refused_without_allow_remote(
        ipamd_path, tmp_path, addr, named):
    data = tmp_path / "data"
    code, err = run([ipamd_path, "--listen", addr, "--data-dir", data])
    assert code == 1, err
    assert f"refusing to listen on `{addr}'" in err and named in err
    assert "--allow-remote" in err
    # Refused before the data directory is touched.
    assert not data.exists()


@pytest.mark.parametrize("resolves_to", [["192.0.2.10"], ["127.0.0.1", "2001:db8::10"]])
def test_a_hostname_that_resolves_beyond_loopback_is_refused(ipamd_path, tmp_path, resolves_to):
    # The name's addresses come from a hosts file of the test's own, read through
    # Debian's nss_wrapper (made to give programs under test a resolver of their own).
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"{a} ipamd-test.invalid\n" for a in resolves_to))
    env = {"LD_PRELOAD": "libnss_wrapper.so", "NSS_WRAPPER_HOSTS": str(hosts),
           # An ASan ipamd wants its runtime first; the preloaded wrapper is harmless.
           "ASAN_OPTIONS": ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                                "verify_asan_link_order=0") if x)}
    code, err = run([ipamd_path, "--listen", "ipamd-test.invalid:0", "--data-dir",
                     tmp_path / "data"], env=env)
    assert code == 1, err
    remote = resolves_to[-1]
    assert f"refusing to listen on `ipamd-test.invalid:0': {remote} is not a loopback address" \
        in err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("addr", ["127.0.0.1:0", "localhost:0", "[::1]:0", "127.0.0.2:0"])
def test_loopback_listeners_need_no_flag(ipamd_factory, pb, addr):
    d = ipamd_factory(extra_args=("--listen", addr))
    port = tcp_port(d, addr)
    host = {"[::1]:0": "[::1]", "localhost:0": "localhost"}.get(addr, addr.split(":")[0])
    c = IpamClient(f"{host}:{port}", pb)
    try:
        assert c.health.Check(service="").status == pb.health.HealthCheckResponse.SERVING
    finally:
        c.close()
    assert "reachable from other hosts" not in d.stderr_text()


def test_allow_remote_skips_the_loopback_check(ipamd_path, tmp_path):
    # The name still cannot be bound, but the refusal now comes from binding.
    code, err = run([ipamd_path, "--allow-remote", "--listen", "no-such-host.invalid:0",
                     "--data-dir", tmp_path / "data"])
    assert code == 1
    assert "cannot listen on `no-such-host.invalid:0'" in err
    assert "refusing" not in err


def _netns_available():
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _netns_available(), reason="cannot create a network namespace here")
@pytest.mark.parametrize("tls", [False, True])
def test_with_allow_remote_a_wildcard_listener_starts_and_without_tls_ipamd_warns(
        ipamd_path, tmp_path, certs, tls):
    """In a network namespace of its own (no interface but a down loopback) the
    wildcard address reaches no other host, yet is what ipamd must warn about."""
    sock = tmp_path / "s.sock"
    argv = ["unshare", "--net", str(ipamd_path), "--allow-remote", "--listen", "0.0.0.0:0",
            "--listen", f"unix:{sock}", "--data-dir", str(tmp_path / "data")]
    if tls:
        argv += ["--tls-cert", str(certs.server), "--tls-key", str(certs.server_key)]
    log = tmp_path / "ipamd.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while "serving on 0.0.0.0:0" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=RUN_TIMEOUT) == 0, log.read_text()
    text = log.read_text()
    if tls:
        assert "(port" in text and "TLS)" in text
        assert "without TLS" not in text
        assert "`0.0.0.0:0' is reachable from other hosts and clients are not authenticated" \
            in text
    else:
        assert "warn `0.0.0.0:0' is reachable from other hosts without TLS" in text


# --------------------------------------------------------------------------
# TLS and mutual TLS.
# --------------------------------------------------------------------------

def test_a_tls_listener_serves_clients_that_trust_its_ca_and_nobody_else(ipamd_factory, pb,
                                                                         certs):
    d = ipamd_factory(extra_args=tls_args(certs))
    port = tcp_port(d)
    assert "(port %d, TLS)" % port in d.stderr_text()
    serving = pb.health.HealthCheckResponse.SERVING
    # Verified by IP address and by name.
    assert health_over(tls_client(pb, f"127.0.0.1:{port}", ca=certs.ca)) == serving
    assert health_over(tls_client(pb, f"localhost:{port}", ca=certs.ca)) == serving
    # A CA that did not sign the server's certificate.
    assert refused(tls_client(pb, f"127.0.0.1:{port}", ca=certs.other_ca)).code() == \
        grpc.StatusCode.UNAVAILABLE
    # Plaintext to a TLS port.
    plain = IpamClient(f"127.0.0.1:{port}", pb)
    assert refused(plain).code() == grpc.StatusCode.UNAVAILABLE
    # The Unix socket stays plaintext.
    assert d.client.health.Check(service="").status == serving


def test_mutual_tls_refuses_clients_without_a_certificate_its_ca_signed(ipamd_factory, pb,
                                                                        certs):
    d = ipamd_factory(extra_args=tls_args(certs, mutual=True))
    port = tcp_port(d)
    assert "(port %d, mutual TLS)" % port in d.stderr_text()
    target = f"127.0.0.1:{port}"
    assert refused(tls_client(pb, target, ca=certs.ca)).code() == grpc.StatusCode.UNAVAILABLE
    assert refused(tls_client(pb, target, ca=certs.ca, cert=certs.other_client,
                              key=certs.other_client_key)).code() == grpc.StatusCode.UNAVAILABLE
    good = tls_client(pb, target, ca=certs.ca, cert=certs.client, key=certs.client_key)
    try:
        good.apply_pool("lan", ["192.0.2.0/29"])
        assert list(good.alloc("lan", "over-mtls").addresses) == ["192.0.2.0"]
    finally:
        good.close()
    assert d.client.GetLease(owner="over-mtls").lease.addresses == ["192.0.2.0"]


@pytest.mark.parametrize("which", ["cert", "key", "client-ca"])
def test_an_unreadable_tls_file_stops_ipamd_at_start_naming_it(ipamd_path, tmp_path, certs,
                                                               which):
    files = {"cert": certs.server, "key": certs.server_key, "client-ca": certs.ca}
    files[which] = tmp_path / "missing.pem"
    data = tmp_path / "data"
    code, err = run([ipamd_path, "--listen", "127.0.0.1:0", "--data-dir", data,
                     "--tls-cert", files["cert"], "--tls-key", files["key"],
                     "--tls-client-ca", files["client-ca"]])
    assert code == 1
    assert f"cannot read --tls-{which} `{tmp_path}/missing.pem': No such file or directory" \
        in err
    assert not data.exists()


def test_a_tls_file_that_is_not_pem_stops_ipamd_at_start(ipamd_path, tmp_path, certs):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    code, err = run([ipamd_path, "--listen", "127.0.0.1:0", "--data-dir", tmp_path / "data",
                     "--tls-cert", junk, "--tls-key", certs.server_key])
    assert code == 1
    assert f"cannot read --tls-cert `{junk}': not PEM" in err


def test_a_key_that_does_not_match_the_certificate_stops_ipamd(ipamd_path, tmp_path, certs):
    code, err = run([ipamd_path, "--listen", "127.0.0.1:0", "--data-dir", tmp_path / "data",
                     "--tls-cert", certs.server, "--tls-key", certs.client_key])
    assert code == 1
    assert "cannot listen on `127.0.0.1:0'" in err and "TLS certificate and key" in err


@pytest.mark.parametrize("args, named", [
    (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-key", "k.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert and --tls-key"),
    (["--max-watchers", "0"], "--max-watchers `0' is not a number"),
    (["--max-watchers", "many"], "--max-watchers `many' is not a number"),
    (["--watch-history", "0"], "--watch-history `0' is not a number"),
])
def test_incomplete_tls_options_and_bad_limits_are_usage_errors(ipamd_path, tmp_path, args,
                                                                named):
    code, err = run([ipamd_path, "--data-dir", tmp_path / "data", *args])
    assert code == USAGE
    assert named in err


def test_help_documents_the_access_options(ipamd_path):
    code, out = run([ipamd_path, "--help"])
    assert code == 0
    for opt in ("--socket-mode MODE", "--allow-remote", "--tls-cert FILE", "--tls-key FILE",
                "--tls-client-ca FILE", "--max-watchers N", "--watch-history N"):
        assert opt in out


# --------------------------------------------------------------------------
# ipamctl and the adapter over TLS.
# --------------------------------------------------------------------------

def test_ipamctl_speaks_tls_and_fails_cleanly_when_it_cannot_verify(ipamd_factory, ipamctl_path,
                                                                    certs):
    d = ipamd_factory(extra_args=tls_args(certs, mutual=True))
    server = f"127.0.0.1:{tcp_port(d)}"
    mine = ["--tls-ca", certs.ca, "--tls-cert", certs.client, "--tls-key", certs.client_key]

    code, out = run([ipamctl_path, "--server", server, *mine, "health"])
    assert (code, out.strip()) == (0, "SERVING")
    code, out = run([ipamctl_path, "--server", server, *mine, "pool", "apply", "lan",
                     "--block", "192.0.2.0/29"])
    assert code == 0, out
    # The flags go anywhere, like --server; the server name can be given.
    code, out = run([ipamctl_path, "allocate", "--pool", "lan", "--owner", "ctl", *mine,
                     "--server", server, "--tls-server-name", "localhost"])
    assert code == 0 and "192.0.2.0" in out, out

    # The wrong CA: UNAVAILABLE, one message, no usage.
    code, out = run([ipamctl_path, "--server", server, "--tls-ca", certs.other_ca,
                     "--tls-cert", certs.client, "--tls-key", certs.client_key, "health"])
    assert code == UNAVAILABLE
    assert out.startswith("ipamctl: ") and "usage" not in out
    assert re.search(r"certificate|handshake|ssl", out, re.I), out
    # No client certificate, an untrusted one, a name the certificate does not carry.
    for extra in (["--tls-ca", certs.ca],
                  ["--tls-ca", certs.ca, "--tls-cert", certs.other_client,
                   "--tls-key", certs.other_client_key],
                  [*mine, "--tls-server-name", "elsewhere.example"]):
        code, out = run([ipamctl_path, "--server", server, *extra, "health"])
        assert code == UNAVAILABLE, (extra, out)
        assert out.startswith("ipamctl: ")


def test_ipamctl_reads_tls_settings_from_the_environment_for_tcp_servers_only(
        ipamd_factory, ipamctl_path, certs):
    d = ipamd_factory(extra_args=tls_args(certs))
    env = {"IPAMCTL_TLS_CA": str(certs.ca)}
    code, out = run([ipamctl_path, "--server", f"127.0.0.1:{tcp_port(d)}", "health"], env=env)
    assert (code, out.strip()) == (0, "SERVING")
    # The same environment does not break the plaintext Unix socket.
    code, out = run([ipamctl_path, "--server", d.target, "health"], env=env)
    assert (code, out.strip()) == (0, "SERVING")
    # A flag overrides the environment.
    code, out = run([ipamctl_path, "--server", f"127.0.0.1:{tcp_port(d)}", "--tls-ca",
                     certs.other_ca, "health"], env=env)
    assert code == UNAVAILABLE


@pytest.mark.parametrize("args, named", [
    (["--server", "unix:/tmp/x.sock", "--tls-ca", "ca.pem"],
     "--tls-ca is for a host:port server"),
    (["--server", "127.0.0.1:1", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
])
def test_ipamctl_tls_flag_misuse_is_a_usage_error(ipamctl_path, args, named):
    code, out = run([ipamctl_path, *args, "health"])
    assert code == USAGE
    assert named in out and "usage: ipamctl" in out


def test_ipamctl_names_an_unreadable_tls_file(ipamctl_path, tmp_path):
    code, out = run([ipamctl_path, "--server", "127.0.0.1:1", "--tls-ca",
                     tmp_path / "nope.pem", "health"])
    assert code == USAGE
    assert f"ipamctl: cannot read the TLS CA file `{tmp_path}/nope.pem'" in out


def test_ipamctl_help_lists_the_tls_flags(ipamctl_path):
    code, out = run([ipamctl_path, "--help"])
    assert code == 0
    for flag in ("--tls-ca FILE", "--tls-cert FILE", "--tls-key FILE",
                 "--tls-server-name NAME", "$IPAMCTL_TLS_CA"):
        assert flag in out


def test_the_adapter_lists_its_ipamd_tls_flags(adapter_path):
    code, out = run([adapter_path, "--help"])
    assert code == 0
    for flag in ("--ipamd-tls-ca FILE", "--ipamd-tls-cert FILE", "--ipamd-tls-key FILE"):
        assert flag in out


@pytest.mark.parametrize("args, code_named", [
    (["--ipamd", "unix:/tmp/x.sock", "--ipamd-tls-ca", "ca.pem"],
     (USAGE, "--ipamd-tls-* are for a host:port ipamd")),
    (["--ipamd", "127.0.0.1:1", "--ipamd-tls-key", "k.pem"],
     (USAGE, "--ipamd-tls-cert and --ipamd-tls-key go together")),
    (["--ipamd", "127.0.0.1:1", "--ipamd-tls-ca", "/nonexistent/ca.pem"],
     (1, "cannot read the TLS CA file `/nonexistent/ca.pem'")),
])
def test_the_adapter_refuses_unusable_ipamd_tls_settings(adapter_path, args, code_named):
    code, out = run([adapter_path, "--server", "http://127.0.0.1:1", *args])
    assert (code, code_named[1] in out) == (code_named[0], True), out


def test_the_adapter_reaches_a_mutual_tls_ipamd(ipamd_factory, adapter_path, certs, tmp_path):
    """Without an API server the adapter gets as far as its first Kubernetes request,
    which it only makes once ipamd answered its health check over mutual TLS."""
    d = ipamd_factory(extra_args=tls_args(certs, mutual=True))
    log = tmp_path / "adapter.log"
    argv = [str(adapter_path), "--server", "http://127.0.0.1:1",
            "--ipamd", f"127.0.0.1:{tcp_port(d)}", "--ipamd-tls-ca", str(certs.ca),
            "--ipamd-tls-cert", str(certs.client), "--ipamd-tls-key", str(certs.client_key)]
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while "start-up: GET http://127.0.0.1:1/" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=RUN_TIMEOUT)
    assert code == 0, log.read_text()
    assert "(TLS)" in log.read_text()


# --------------------------------------------------------------------------
# Limits: Watch streams, message sizes, stuck consumers.
# --------------------------------------------------------------------------

def test_watch_streams_beyond_max_watchers_get_resource_exhausted(ipamd_factory):
    d = ipamd_factory(extra_args=("--max-watchers", "2"))
    c = d.client
    first, second = c.Watch(from_revision=0), c.Watch(from_revision=0)
    try:
        assert first.header().created and second.header().created
        third = c.Watch(from_revision=0)
        err = third.wait_error()
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-watchers" in err.details()
        health = c.health.Watch(service="")
        assert health.wait_error().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Unary calls are not streams: still served.
        c.apply_pool("lan", ["192.0.2.0/29"])
        assert first.next_event().pool.name == "lan"
        # A closed stream frees its place.
        second.close()
        c.watch_when_a_place_frees().close()
    finally:
        first.close()
        second.close()


def test_a_message_over_4_mib_is_refused_and_ipamd_carries_on(ipamd):
    c = ipamd.client
    big = ipamd.pb.ipam.ApplyPoolRequest(
        pool=ipamd.pb.ipam.Pool(name="big", blocks=["192.0.2.0/24"] * (5 * 1024 * 1024 // 14)))
    assert big.ByteSize() > 4 * 1024 * 1024
    with pytest.raises(grpc.RpcError) as e:
        c.ApplyPool(big, timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # So is metadata over 8 KiB.
    list_pools = c.channel.unary_unary("/ipam.v1.Ipam/ListPools")
    with pytest.raises(grpc.RpcError) as e:
        list_pools(b"", metadata=(("x-huge", "h" * 16 * 1024),), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # gRPC may close that client's connection; ipamd itself carries on.
    c.connect()
    c.channel.unary_unary("/ipam.v1.Ipam/ListPools")(
        b"", metadata=(("x-fine", "h" * 4 * 1024),), timeout=10)
    assert c.health.Check(service="").status == ipamd.pb.health.HealthCheckResponse.SERVING


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_watch_consumer_that_stops_reading_is_dropped_and_memory_stays_bounded(
        ipamd_factory, pb, monkeypatch):
    """Three Watch consumers read their first message and then nothing (their
    channels announce a small window and never grow it), while a storm of large
    events goes by. ipamd must drop them with OUT_OF_RANGE once their next event
    leaves its history, keep serving everyone else, and not hold the events it
    could not send: its resident memory grows by far less than what went by."""
    # ASan keeps freed memory in quarantine, which would look like growth.
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=8")
    history = 512
    d = ipamd_factory(extra_args=("--watch-history", str(history)))
    c = d.client
    c.apply_pool("lan", ["198.51.100.0/24"])
    labels = {f"k{j}": chr(ord("a") + j) * 1000 for j in range(8)}  # ~8 KiB per event
    owners = 64

    def churn(rounds):
        """Allocates then releases `owners` leases per round: 2 events per lease."""
        for _ in range(rounds):
            for fs in ([c.Allocate.future(pool="lan", owner=f"o{i}", labels=labels)
                        for i in range(owners)],
                       [c.Release.future(owner=f"o{i}") for i in range(owners)]):
                for f in fs:
                    f.result()
        return rounds * owners * 2

    # Warm up: fill the history and every buffer once, so what follows is growth.
    churn(2 * history // (owners * 2) + 2)
    reader = c.Watch(timeout=300)  # outlives the loop below (120 s) on a slow machine
    reader.header()

    stuck = []
    for _ in range(3):
        ch = grpc.insecure_channel(d.target, options=[("grpc.http2.lookahead_bytes", 16384),
                                                      ("grpc.http2.bdp_probe", 0)])
        call = ch.unary_stream("/ipam.v1.Ipam/Watch",
                               request_serializer=pb.ipam.WatchRequest.SerializeToString,
                               response_deserializer=pb.ipam.WatchResponse.FromString)(
            pb.ipam.WatchRequest(), timeout=120)
        assert next(call).created
        stuck.append((ch, call))
    rss_before = vm_rss_kib(d.proc.pid)

    sent = 0
    events_seen = 0
    deadline = time.monotonic() + 120
    while d.stderr_text().count("dropping a Watch stream that stopped reading") < 3:
        assert time.monotonic() < deadline, "stuck watchers were never dropped"
        sent += churn(8)
        # The consumer that reads keeps up with everything.
        while events_seen < sent:
            reader.next_event()
            events_seen += 1
    # Enough went by that holding it for three consumers would be plain to see.
    while sent < 12000:
        sent += churn(8)
        while events_seen < sent:
            reader.next_event()
            events_seen += 1
    rss_after = vm_rss_kib(d.proc.pid)

    for ch, call in stuck:
        with pytest.raises(grpc.RpcError) as e:
            for _ in call:
                pass
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "watch fell behind" in e.value.details()
        ch.close()
    reader.close()
    assert c.health.Check(service="").status == pb.health.HealthCheckResponse.SERVING

    went_by_kib = sent * 8
    grown_kib = rss_after - rss_before
    assert grown_kib < 64 * 1024 and grown_kib < went_by_kib / 2, \
        f"RSS grew {grown_kib} KiB while {went_by_kib} KiB of events went by"


def test_a_client_pinging_every_6_s_keeps_its_quiet_watch_open(ipamd, pb):
    """Clients often send HTTP/2 keepalive pings (every 30 s is common); ipamd accepts
    one every 5 s or more, with or without a call open. gRPC's own defaults (one in
    5 minutes) answered the third ping on a Watch with nothing to send with GOAWAY
    "too_many_pings", ending the stream after 18 s here."""
    ka = [("grpc.keepalive_time_ms", 6000), ("grpc.keepalive_timeout_ms", 5000),
          ("grpc.keepalive_permit_without_calls", 1),
          ("grpc.http2.max_pings_without_data", 0),
          ("grpc.http2.min_time_between_pings_ms", 6000),
          ("grpc.http2.min_ping_interval_without_data_ms", 6000)]
    c = IpamClient(ipamd.target, pb, options=ka)
    try:
        w = c.Watch(from_revision=0, timeout=120)
        assert w.header().created
        # What is tested is time itself: the stream must outlive three pings.
        time.sleep(21)
        ipamd.client.apply_pool("lan", ["192.0.2.0/29"])
        assert w.next_event().pool.name == "lan"
        assert "too_many_pings" not in ipamd.stderr_text()
    finally:
        c.close()


def test_a_frozen_ipamd_ends_an_ipamctl_watch_instead_of_hanging_it(ipamd_factory,
                                                                     ipamctl_path):
    """libipamclient pings while calls are open, also on a quiet Watch: a peer that
    stops answering without closing the connection (a vanished host; here a process
    stopped with SIGSTOP, whose kernel keeps the TCP connection up) ends the stream
    with UNAVAILABLE after the keepalive time and timeout (30 s), instead of never."""
    d = ipamd_factory(extra_args=("--listen", "127.0.0.1:0"))
    server = f"127.0.0.1:{tcp_port(d)}"
    env = {k: v for k, v in os.environ.items() if k != "IPAMD_ADDR"}
    w = subprocess.Popen([str(ipamctl_path), "--server", server, "watch"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert "ipamctl: watching" in w.stderr.readline()
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            code = w.wait(timeout=90)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        assert code == 14, w.stderr.read()  # UNAVAILABLE
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
        w.stdout.close()
        w.stderr.close()
    # Thawed, ipamd carries on.
    assert d.client.health.Check(service="").status == 1


class CountingRelay:
    """A Unix socket that relays each connection to ipamd's and counts the bytes it
    has handed to ipamd's socket: once a count has grown, the kernel holds those
    bytes for ipamd, whether or not ipamd is running to read them."""

    def __init__(self, path, upstream):
        self.upstream = upstream
        self.to_server = 0
        self.cond = threading.Condition()
        self.socks = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.target = f"unix:{path}"
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return  # closed
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            up.connect(self.upstream)
            self.socks += [down, up]
            for src, dst, counted in ((down, up, True), (up, down, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, counted), daemon=True)
                self.threads.append(t)
                t.start()

    def _pump(self, src, dst, counted):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if counted:
                    with self.cond:
                        self.to_server += len(data)
                        self.cond.notify_all()
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_for_more_than(self, n, timeout=10.0):
        with self.cond:
            return self.cond.wait_for(lambda: self.to_server > n, timeout)

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(10)
        for sock in self.socks:
            sock.close()


def test_a_call_that_arrives_after_a_lease_fell_due_finds_it_gone(ipamd, pb, tmp_path):
    """Expiry is not only a timer: a Renew that reaches ipamd after the lease's
    expire_time (here while ipamd is frozen, as it can be by a commit waiting on a
    slow disk) finds the lease gone, in whatever order ipamd then sees the timer
    and the call, and cannot bring it back."""
    relay = CountingRelay(tmp_path / "relay.sock", ipamd.target[len("unix:"):])
    c = IpamClient(relay.target, pb)
    try:
        c.apply_pool("p", ["192.0.2.0/24"])
        short = c.alloc("p", "short", ttl_seconds=2)
        never = threading.Event()
        os.kill(ipamd.proc.pid, signal.SIGSTOP)
        try:
            base = relay.to_server
            # Wall-clock time is the condition here: a second past the expiry.
            while time.time() < short.expire_time + 1:
                never.wait(short.expire_time + 1 - time.time())
            renew = c.Renew.future(owner="short", ttl_seconds=3600)
            assert relay.wait_for_more_than(base), "the Renew never reached ipamd's socket"
        finally:
            os.kill(ipamd.proc.pid, signal.SIGCONT)
        with pytest.raises(grpc.RpcError) as e:
            renew.result()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.GetLease(owner="short")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        c.close()
        relay.close()


def test_hundreds_of_connections_do_not_starve_other_clients(ipamd, pb):
    """A client that opens many connections (each its own channel with its own
    subchannel pool, so no connection is shared) and keeps them open with a call
    each cannot exhaust ipamd: a fresh client is still served, and ipamd's
    memory stays bounded."""
    base_rss = vm_rss_kib(ipamd.proc.pid)
    opts = CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)]
    check = "/grpc.health.v1.Health/Check"
    req = pb.health.HealthCheckRequest(service="").SerializeToString()
    channels = []
    try:
        for _ in range(300):
            ch = grpc.insecure_channel(ipamd.target, options=opts)
            channels.append(ch)
            ch.unary_unary(check)(req, timeout=10)
        # They are separate connections, all still open in ipamd.
        sockets = sum(1 for fd in os.listdir(f"/proc/{ipamd.proc.pid}/fd")
                      if os.readlink(f"/proc/{ipamd.proc.pid}/fd/{fd}").startswith("socket:"))
        assert sockets >= 300, f"ipamd holds {sockets} sockets, not one per connection"
        for ch in channels[::30]:
            ch.unary_unary(check)(req, timeout=10)
        ipamd.client.apply_pool("lan", ["203.0.113.0/28"])
        lease = ipamd.client.alloc("lan", "fresh")
        assert list(lease.addresses) == ["203.0.113.0"]
        grown = vm_rss_kib(ipamd.proc.pid) - base_rss
        # Generous: a connection costs tens of KiB; 300 of them must stay far
        # below what a client could make ipamd hold without limits.
        assert grown < 128 * 1024, f"ipamd grew {grown} KiB for 300 connections"
    finally:
        for ch in channels:
            ch.close()
