"""The ipamd process itself: command line, exclusivity, store errors, pools file,
listeners, signals, and acknowledged leases surviving SIGKILL."""

import signal
import subprocess
import threading

import grpc
import pytest

from ipam_client import IpamClient, tcp_port

RUN_TIMEOUT = 30


def run_ipamd(ipamd_path, *args, cwd=None):
    """Runs ipamd expecting it to exit by itself; returns (code, stderr)."""
    p = subprocess.run([str(ipamd_path), *args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=cwd)
    return p.returncode, p.stderr + p.stdout


def test_a_second_ipamd_on_the_same_data_directory_refuses_to_start(ipamd, ipamd_path, tmp_path):
    code, err = run_ipamd(ipamd_path, "--listen", f"unix:{tmp_path}/other.sock",
                          "--data-dir", str(ipamd.data_dir))
    assert code == 1
    assert f"data directory {ipamd.data_dir} is in use by another ipamd" in err
    # The first one is untouched.
    assert ipamd.client.health.Check(service="").status == ipamd.pb.health.HealthCheckResponse.SERVING


def test_a_second_ipamd_on_the_same_tcp_port_refuses_to_start(ipamd_factory, ipamd_path, tmp_path):
    first = ipamd_factory("first", extra_args=("--listen", "127.0.0.1:0"))
    port = tcp_port(first)
    code, err = run_ipamd(ipamd_path, "--listen", f"127.0.0.1:{port}",
                          "--data-dir", str(tmp_path / "second-data"))
    assert code == 1
    assert f"cannot listen on `127.0.0.1:{port}'" in err
    assert first.running()


def test_ipamd_serves_on_tcp_and_unix_listeners_at_once(ipamd_factory, pb):
    d = ipamd_factory(extra_args=("--listen", "127.0.0.1:0"))
    port = tcp_port(d)
    d.client.apply_pool("lan", ["192.0.2.0/29"])
    tcp = IpamClient(f"127.0.0.1:{port}", pb)
    try:
        tcp.wait_ready(timeout=10)
        lease = tcp.Allocate(pool="lan", owner="over-tcp").lease
        assert list(lease.addresses) == ["192.0.2.0"]
        assert d.client.GetLease(owner="over-tcp").lease.addresses == lease.addresses
    finally:
        tcp.close()


def test_a_corrupt_database_is_an_error_and_is_left_as_it_was(ipamd_path, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    garbage = b"this is not an SQLite database, and ipamd must not overwrite it\n" * 64
    (data / "ipamd.db").write_bytes(garbage)
    code, err = run_ipamd(ipamd_path, "--listen", f"unix:{tmp_path}/s.sock",
                          "--data-dir", str(data))
    assert code == 1
    assert "cannot open the store" in err and "not a database" in err
    assert (data / "ipamd.db").read_bytes() == garbage


def test_an_unreadable_stored_lease_is_an_error_not_an_empty_start(ipamd, ipamd_path, tmp_path):
    ipamd.client.apply_pool("lan", ["192.0.2.0/29"])
    ipamd.client.alloc("lan", "keep-me")
    ipamd.stop()
    import sqlite3
    db = sqlite3.connect(ipamd.data_dir / "ipamd.db")
    db.execute("UPDATE leases SET data = x'ffffffff' WHERE key = 'keep-me'")
    db.commit()
    db.close()
    code, err = run_ipamd(ipamd_path, "--listen", f"unix:{tmp_path}/s.sock",
                          "--data-dir", str(ipamd.data_dir))
    assert code == 1
    assert "stored lease `keep-me' cannot be decoded" in err


def test_the_pools_file_creates_and_updates_pools_and_keeps_leases(ipamd_factory, tmp_path):
    conf = tmp_path / "pools.conf"
    conf.write_text("# demo\n[pool lan]\nblocks = 192.0.2.0/24\nskip-end-ips = true\n\n"
                    "[pool v6]\nblocks = 2001:db8::/64\nsearch-order = desc\n")
    d = ipamd_factory(config=conf)
    lan = d.client.get_pool("lan")
    assert list(lan.blocks) == ["192.0.2.0/24"] and lan.skip_end_ips
    assert d.client.get_pool("v6").search_order == d.pb.ipam.SEARCH_ORDER_DESC
    lease = d.client.alloc("lan", "web")
    assert list(lease.addresses) == ["192.0.2.1"]
    # A pool made over the API and not in the file is left alone.
    d.client.apply_pool("extra", ["198.51.100.0/30"])

    conf.write_text("[pool lan]\nblocks = 192.0.2.0/24, 203.0.113.0/24\nsearch-order = desc\n")
    d.restart()
    lan = d.client.get_pool("lan")
    assert list(lan.blocks) == ["192.0.2.0/24", "203.0.113.0/24"]
    assert lan.search_order == d.pb.ipam.SEARCH_ORDER_DESC
    assert d.client.GetLease(owner="web").lease.addresses == lease.addresses
    assert d.client.get_pool("extra").name == "extra"
    assert d.client.get_pool("v6").name == "v6"


@pytest.mark.parametrize("text, line, want", [
    ("[pool lan]\nblocks = 192.0.2.0/24\ncolour = blue\n", 3, "unknown key `colour'"),
    ("[pool lan]\nblocks = 192.0.2.0/33\n", 1, "192.0.2.0/33"),
    ("[pool lan]\nblocks = 192.0.2.9-192.0.2.1\n", 1, "192.0.2.9-192.0.2.1"),
    ("[pool bad name]\nblocks = 192.0.2.0/24\n", 1, "invalid pool name `bad name'"),
])
def test_a_bad_pools_file_stops_ipamd_with_the_file_and_line(ipamd_path, tmp_path, text, line, want):
    conf = tmp_path / "pools.conf"
    conf.write_text(text)
    code, err = run_ipamd(ipamd_path, "--listen", f"unix:{tmp_path}/s.sock",
                          "--data-dir", str(tmp_path / "data"), "--config", str(conf))
    assert code == 1
    assert f"{conf}:{line}: " in err and want in err


@pytest.mark.parametrize("text, want", [
    (None, "No such file or directory"),
    ("[pool lan]\nblocks = 192.0.2.0/24\ncolour = blue\n", "unknown key `colour'"),
    ("blocks = 192.0.2.0/24\n", "pools.conf:1: "),
])
def test_an_unreadable_or_malformed_pools_file_stops_ipamd_before_the_data_dir(
        ipamd_path, tmp_path, text, want):
    conf = tmp_path / "pools.conf"
    if text is not None:
        conf.write_text(text)
    code, err = run_ipamd(ipamd_path, "--listen", f"unix:{tmp_path}/s.sock",
                          "--data-dir", str(tmp_path / "data"), "--config", str(conf))
    assert code == 1
    assert want in err and str(conf) in err
    assert not (tmp_path / "data").exists(), "the data directory was created"


@pytest.mark.parametrize("args, want", [
    (["--bogus"], "unknown option or missing value: `--bogus'"),
    (["--listen"], "unknown option or missing value: `--listen'"),
    (["--log-level", "loud"], "--log-level `loud' is not debug, info, warn or error"),
    (["stray"], "unexpected argument `stray'"),
])
def test_bad_command_lines_exit_2_naming_the_problem(ipamd_path, args, want):
    code, err = run_ipamd(ipamd_path, *args)
    assert code == 2
    assert want in err


def test_an_address_that_cannot_be_listened_on_is_named(ipamd_path, tmp_path):
    (tmp_path / "file").write_text("a regular file where the socket should go")
    code, err = run_ipamd(ipamd_path, "--listen", f"unix:{tmp_path}/file",
                          "--data-dir", str(tmp_path / "data"))
    assert code == 1
    assert f"cannot listen on `unix:{tmp_path}/file'" in err


def test_help_and_version(ipamd_path):
    code, out = run_ipamd(ipamd_path, "--help")
    assert code == 0
    for opt in ("--listen ADDR", "--data-dir DIR", "--config FILE", "--log-level LEVEL"):
        assert opt in out
    code, out = run_ipamd(ipamd_path, "--version")
    assert code == 0 and out.startswith("ipamd ")


def test_sigint_stops_ipamd_cleanly_like_sigterm(ipamd):
    ipamd.client.close()
    proc, ipamd.proc = ipamd.proc, None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=RUN_TIMEOUT) == 0


def test_every_lease_acknowledged_before_sigkill_survives_the_restart(ipamd):
    """Clients allocate concurrently; ipamd is killed with SIGKILL mid-stream. Every
    Allocate that was answered OK must be there after the restart, with the same
    addresses, and no address is held twice."""
    c = ipamd.client
    c.apply_pool("lan", ["198.51.100.0/24", "203.0.113.0/24"])
    acked = {}
    lock = threading.Lock()
    enough = threading.Event()

    def worker(k):
        for i in range(400):
            owner = f"w{k}-{i}"
            try:
                lease = c.Allocate(pool="lan", owner=owner, timeout=5).lease
            except grpc.RpcError:
                return  # The daemon is gone: this and later calls are unacknowledged.
            with lock:
                acked[owner] = list(lease.addresses)
                if len(acked) >= 150:
                    enough.set()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    assert enough.wait(timeout=60), "the allocation storm did not get going"
    proc, ipamd.proc = ipamd.proc, None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=RUN_TIMEOUT)
    for t in threads:
        t.join(timeout=60)
    with lock:
        acked_now = dict(acked)
    assert len(acked_now) >= 150

    ipamd.start()
    leases, _ = c.all_leases()
    held = {l.owner: list(l.addresses) for l in leases}
    for owner, addrs in acked_now.items():
        assert held.get(owner) == addrs, f"acknowledged lease {owner} {addrs} lost or changed"
    flat = [a for addrs in held.values() for a in addrs]
    assert len(flat) == len(set(flat)), "an address is held twice after the restart"
    # New allocations continue after the highest address held.
    fresh = c.alloc("lan", "after-restart").addresses[0]
    assert fresh not in flat
