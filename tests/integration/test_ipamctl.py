"""ipamctl, the command-line client: usage errors, exit statuses and output.

The first tests need no server. The rest start the real ipamd ($IPAMD, default
build/ipamd/ipamd) on a Unix socket in a temporary directory through the `daemon`
fixture below, and drive it only through ipamctl ($IPAMCTL, default
build/clients/ipamctl). Every subprocess has a timeout.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
IPAMCTL = Path(os.environ.get("IPAMCTL", REPO / "build" / "clients" / "ipamctl"))
IPAMD = Path(os.environ.get("IPAMD", REPO / "build" / "ipamd" / "ipamd"))

CMD_TIMEOUT = 30.0    # one ipamctl run
START_TIMEOUT = 30.0  # ipamd answering health after start
STOP_TIMEOUT = 30.0   # ipamd exiting after SIGTERM
EVENT_TIMEOUT = 10.0  # one line of `ipamctl watch`
NO_SERVER = "unix:/nonexistent/ipamctl-test.sock"

# gRPC status codes, as ipamctl's exit statuses.
OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS = 0, 3, 5, 6
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNAVAILABLE = 8, 9, 14
USAGE = 2


def run_ctl(*args, env=None, timeout=CMD_TIMEOUT):
    if not (IPAMCTL.is_file() and os.access(IPAMCTL, os.X_OK)):
        pytest.fail(f"ipamctl not found at {IPAMCTL} (set IPAMCTL or build it)", pytrace=False)
    full_env = dict(os.environ)
    full_env.pop("IPAMD_ADDR", None)
    full_env.update(env or {})
    return subprocess.run([str(IPAMCTL), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------
# Without a server.
# --------------------------------------------------------------------------

def test_help_lists_every_subcommand_and_exits_0():
    r = run_ctl("--help")
    assert r.returncode == 0
    for line in [
        "ipamctl [--server ADDR] [-o table|json] SUBCOMMAND",
        "pool apply NAME --block B [--block B]... [--order asc|desc] [--skip-end-ips] "
        "[--avoid-buggy-ips] [--allow-share] [--space S]",
        "pool get NAME", "pool list", "pool delete NAME [--force]",
        "allocate --pool P --owner O [--address A]... "
        "[--family ipv4|ipv6|prefer-dual|require-dual] [--primary ipv4|ipv6] [--ttl S] "
        "[--label k=v]... [--port tcp/80]... [--sharing-key K] [--space S]",
        "release --owner O", "renew --owner O [--ttl S]", "lease get OWNER",
        "lease list [--pool P] [--owner-prefix X] [--label k=v]...",
        "watch [--from-revision N]", "health",
    ]:
        assert line in r.stdout


@pytest.mark.parametrize("args, named", [
    ([], "missing subcommand"),
    (["frobnicate"], "`frobnicate'"),
    (["pool"], "`pool'"),
    (["pool", "frob"], "`pool frob'"),
    (["--nope", "health"], "`--nope'"),
    (["pool", "apply", "lan", "--block", "192.0.2.0/24", "--frob"], "`--frob'"),
    (["allocate", "--pool", "p", "--owner", "o", "--force"], "`--force'"),
    (["health", "--ttl", "5"], "`--ttl'"),
    (["pool", "apply", "lan"], "--block"),
    (["pool", "apply", "--block", "192.0.2.0/24"], "NAME"),
    (["allocate", "--owner", "o"], "--pool"),
    (["release"], "--owner"),
    (["lease", "get"], "OWNER"),
    (["allocate", "--pool", "p", "--owner"], "`--owner'"),
    (["pool", "get", "a", "b"], "`b'"),
    (["release", "--owner", "a", "--owner", "b"], "`--owner'"),
    (["pool", "delete", "lan", "--force=yes"], "`--force'"),
    (["-o", "yaml", "health"], "`yaml'"),
    (["pool", "apply", "lan", "--block", "192.0.2.0/24", "--order", "random"], "`random'"),
    (["allocate", "--pool", "p", "--owner", "o", "--family", "ipv5"], "`ipv5'"),
    (["allocate", "--pool", "p", "--owner", "o", "--label", "novalue"], "`novalue'"),
    (["allocate", "--pool", "p", "--owner", "o", "--port", "tcp/0"], "`tcp/0'"),
    (["allocate", "--pool", "p", "--owner", "o", "--port", "tcp/65536"], "`tcp/65536'"),
    (["allocate", "--pool", "p", "--owner", "o", "--port", "gre/1"], "`gre/1'"),
    (["watch", "--from-revision", "-1"], "`-1'"),
])
def test_a_usage_error_exits_2_and_names_what_is_wrong(args, named):
    r = run_ctl("--server", NO_SERVER, *args)
    assert r.returncode == USAGE, r.stderr
    assert named in r.stderr
    assert "usage: ipamctl" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("bad", ["abc", "-1", "+5", " 5", "5s", "0x10", "1e3", "",
                                 "315360001", "99999999999999999999999"])
@pytest.mark.parametrize("sub", [["allocate", "--pool", "p", "--owner", "o"],
                                 ["renew", "--owner", "o"]])
def test_a_bad_ttl_is_refused_before_any_call(sub, bad):
    # The server does not exist: a call would end in UNAVAILABLE (14), not 2.
    r = run_ctl("--server", NO_SERVER, *sub, "--ttl", bad)
    assert r.returncode == USAGE, r.stderr
    assert f"--ttl `{bad}'" in r.stderr
    assert "failed to connect" not in r.stderr


def test_the_largest_ttl_passes_the_parser():
    r = run_ctl("--server", NO_SERVER, "renew", "--owner", "o", "--ttl", "315360000")
    assert r.returncode == UNAVAILABLE, r.stderr


@pytest.mark.parametrize("args", [["health"], ["pool", "list"], ["lease", "get", "x"],
                                  ["-o", "json", "lease", "list"], ["watch"]])
def test_an_unreachable_server_exits_14_with_one_message(args):
    r = run_ctl("--server", NO_SERVER, *args)
    assert r.returncode == UNAVAILABLE
    assert r.stderr.startswith("ipamctl: ")
    assert "nonexistent" in r.stderr
    assert "usage" not in r.stderr
    assert r.stdout == ""


def test_the_server_defaults_to_ipamd_addr():
    r = run_ctl("health", env={"IPAMD_ADDR": "unix:/nonexistent/from-env.sock"})
    assert r.returncode == UNAVAILABLE
    assert "from-env.sock" in r.stderr


def test_server_flag_overrides_ipamd_addr():
    r = run_ctl("--server", NO_SERVER, "health",
                env={"IPAMD_ADDR": "unix:/nonexistent/from-env.sock"})
    assert r.returncode == UNAVAILABLE
    assert "ipamctl-test.sock" in r.stderr


# --------------------------------------------------------------------------
# Against a real ipamd.
# --------------------------------------------------------------------------

class Daemon:
    def __init__(self, server):
        self.server = server

    def ctl(self, *args, **kw):
        return run_ctl("--server", self.server, *args, **kw)

    def ok(self, *args):
        r = self.ctl(*args)
        assert r.returncode == OK, f"ipamctl {' '.join(map(str, args))}: {r.stderr}"
        return r.stdout

    def json(self, *args):
        return json_lines(self.ok("-o", "json", *args))

    def one(self, *args):
        objs = self.json(*args)
        assert len(objs) == 1, objs
        return objs[0]


@pytest.fixture
def daemon(tmp_path):
    if not (IPAMD.is_file() and os.access(IPAMD, os.X_OK)):
        pytest.fail(f"ipamd not found at {IPAMD} (set IPAMD or build it)", pytrace=False)
    # A Unix socket path must fit in sun_path (108 bytes): keep it short.
    sockdir = Path(tempfile.mkdtemp(prefix="ipamctl-"))
    sock = sockdir / "ipamd.sock"
    data = tmp_path / "data"
    data.mkdir()
    errpath = tmp_path / "ipamd.stderr"
    with open(errpath, "wb") as err:
        proc = subprocess.Popen([str(IPAMD), "--listen", f"unix:{sock}", "--data-dir", str(data)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    d = Daemon(f"unix:{sock}")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ipamd exited with {proc.returncode} at start:\n"
                            f"{errpath.read_text(errors='replace')}", pytrace=False)
            if d.ctl("health", timeout=10).returncode == OK:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"ipamd did not become healthy in {START_TIMEOUT}s:\n"
                            f"{errpath.read_text(errors='replace')}", pytrace=False)
            time.sleep(0.02)  # poll interval, not a wait for readiness
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = "no exit after SIGTERM"
        else:
            rc = proc.returncode
        shutil.rmtree(sockdir, ignore_errors=True)
    assert rc == 0, f"ipamd exit status {rc}:\n{errpath.read_text(errors='replace')}"


def test_health_prints_serving_and_exits_0(daemon):
    r = daemon.ctl("health")
    assert (r.returncode, r.stdout) == (OK, "SERVING\n")
    assert daemon.one("health") == {"status": "SERVING"}


def test_the_server_can_come_from_ipamd_addr(daemon):
    r = run_ctl("health", env={"IPAMD_ADDR": daemon.server})
    assert r.returncode == OK, r.stderr


def test_pool_apply_get_list_delete(daemon):
    pool = daemon.one("pool", "apply", "lan", "--block", "192.0.2.0/24",
                      "--block", "2001:db8::/120")
    assert pool["name"] == "lan"
    assert pool["blocks"] == ["192.0.2.0/24", "2001:db8::/120"]
    assert pool["ipv4"]["total"] == "256" and pool["ipv6"]["total"] == "256"
    daemon.ok("pool", "apply", "other", "--block", "198.51.100.0/24")

    got = daemon.one("pool", "get", "lan")
    assert got["blocks"] == pool["blocks"]
    assert [p["name"] for p in daemon.json("pool", "list")] == ["lan", "other"]

    table = daemon.ok("pool", "list").splitlines()
    assert table[0].split() == ["NAME", "SPACE", "BLOCKS", "ORDER", "V4", "USED/TOTAL", "V6",
                                "USED/TOTAL", "LEASES"]
    assert table[1].split() == ["lan", "default", "192.0.2.0/24,2001:db8::/120", "asc",
                                "0/256", "0/256", "0"]
    assert table[2].split()[0] == "other"

    daemon.ok("pool", "delete", "lan")
    r = daemon.ctl("pool", "get", "lan")
    assert r.returncode == NOT_FOUND
    assert r.stderr.startswith("ipamctl: ") and "lan" in r.stderr
    assert [p["name"] for p in daemon.json("pool", "list")] == ["other"]


def test_pool_apply_sends_every_option(daemon):
    pool = daemon.one("pool", "apply", "opts", "--block", "203.0.113.0/24", "--order", "desc",
                      "--skip-end-ips", "--avoid-buggy-ips", "--allow-share", "--space", "lab")
    assert pool["search_order"] == "SEARCH_ORDER_DESC"
    assert pool["skip_end_ips"] and pool["avoid_buggy_ips"] and pool["allow_share"]
    assert pool["space"] == "lab"
    lease = daemon.one("allocate", "--pool", "opts", "--owner", "first")
    assert lease["addresses"] == ["203.0.113.254"]


def test_an_invalid_block_exits_3_and_quotes_it(daemon):
    r = daemon.ctl("pool", "apply", "bad", "--block", "192.0.2.0/33")
    assert r.returncode == INVALID_ARGUMENT
    assert "192.0.2.0/33" in r.stderr


def test_allocate_prints_the_lease_with_proto_field_names(daemon):
    daemon.ok("pool", "apply", "lan", "--block", "192.0.2.0/24")
    before = int(time.time())
    lease = daemon.one("allocate", "--pool", "lan", "--owner", "k8s/default/web",
                       "--ttl", "300", "--label", "app=web", "--label", "tier=front",
                       "--port", "tcp/80", "--port", "UDP/53")
    assert lease["owner"] == "k8s/default/web"
    assert lease["pool"] == "lan"
    assert len(lease["addresses"]) == 1 and lease["addresses"][0].startswith("192.0.2.")
    assert lease["labels"] == {"app": "web", "tier": "front"}
    assert sorted((p["protocol"], p["port"]) for p in lease["ports"]) == [("TCP", 80), ("UDP", 53)]
    assert lease["ttl_seconds"] == 300
    assert lease["expire_time"] >= before + 300 - 5
    assert lease["revision"] > 0

    table = daemon.ok("lease", "get", "k8s/default/web").splitlines()
    assert table[0].split() == ["OWNER", "POOL", "ADDRESSES", "TTL", "EXPIRES", "LABELS"]
    row = table[1].split()
    assert row[:4] == ["k8s/default/web", "lan", lease["addresses"][0], "300s"]
    assert row[5] in ("app=web,tier=front", "tier=front,app=web")
    # Columns line up under their headers.
    assert table[1].index(lease["addresses"][0]) == table[0].index("ADDRESSES")


def test_allocating_again_for_the_same_owner_returns_the_same_lease(daemon):
    daemon.ok("pool", "apply", "lan", "--block", "192.0.2.0/24")
    first = daemon.one("allocate", "--pool", "lan", "--owner", "svc")
    again = daemon.one("allocate", "--pool", "lan", "--owner", "svc")
    assert again["addresses"] == first["addresses"]
    assert len(daemon.json("lease", "list")) == 1


def test_allocating_from_an_exhausted_pool_exits_8(daemon):
    daemon.ok("pool", "apply", "tiny", "--block", "203.0.113.8/31")
    got = {daemon.one("allocate", "--pool", "tiny", "--owner", o)["addresses"][0]
           for o in ("a", "b")}
    assert got == {"203.0.113.8", "203.0.113.9"}
    r = daemon.ctl("allocate", "--pool", "tiny", "--owner", "c")
    assert r.returncode == RESOURCE_EXHAUSTED
    assert r.stderr.startswith("ipamctl: ")
    assert r.stdout == ""


def test_a_requested_address_is_granted_once(daemon):
    daemon.ok("pool", "apply", "lan", "--block", "198.51.100.0/24")
    lease = daemon.one("allocate", "--pool", "lan", "--owner", "a", "--address", "198.51.100.7")
    assert lease["addresses"] == ["198.51.100.7"]
    r = daemon.ctl("allocate", "--pool", "lan", "--owner", "b", "--address", "198.51.100.7")
    assert r.returncode == ALREADY_EXISTS
    assert "198.51.100.7" in r.stderr


def test_allocating_from_an_unknown_pool_exits_5(daemon):
    r = daemon.ctl("allocate", "--pool", "nope", "--owner", "a")
    assert r.returncode == NOT_FOUND
    assert "nope" in r.stderr


def test_release_frees_the_lease_and_a_second_release_exits_5(daemon):
    daemon.ok("pool", "apply", "lan", "--block", "192.0.2.0/24")
    lease = daemon.one("allocate", "--pool", "lan", "--owner", "gone")
    released = daemon.one("release", "--owner", "gone")
    assert released["addresses"] == lease["addresses"]
    assert daemon.ctl("lease", "get", "gone").returncode == NOT_FOUND
    r = daemon.ctl("release", "--owner", "gone")
    assert r.returncode == NOT_FOUND
    assert "gone" in r.stderr


def test_renew_pushes_the_expiry(daemon):
    daemon.ok("pool", "apply", "lan", "--block", "192.0.2.0/24")
    lease = daemon.one("allocate", "--pool", "lan", "--owner", "r", "--ttl", "60")
    renewed = daemon.one("renew", "--owner", "r", "--ttl", "3600")
    assert renewed["ttl_seconds"] == 3600
    assert renewed["expire_time"] >= lease["expire_time"] + 3600 - 60 - 5
    assert daemon.ctl("renew", "--owner", "nobody").returncode == NOT_FOUND


def test_deleting_a_pool_with_leases_needs_force(daemon):
    daemon.ok("pool", "apply", "lan", "--block", "192.0.2.0/24")
    daemon.ok("allocate", "--pool", "lan", "--owner", "held")
    assert daemon.ctl("pool", "delete", "lan").returncode == FAILED_PRECONDITION
    assert daemon.one("pool", "delete", "lan", "--force")["released_leases"] == 1
    assert daemon.json("lease", "list") == []


def test_lease_list_filters_by_pool_owner_prefix_and_labels(daemon):
    daemon.ok("pool", "apply", "a", "--block", "192.0.2.0/24")
    daemon.ok("pool", "apply", "b", "--block", "198.51.100.0/24")
    for owner, pool, team in [("k8s/ns1/x", "a", "red"), ("k8s/ns1/y", "b", "blue"),
                              ("k8s/ns2/z", "a", "blue"), ("vm/1", "b", "red")]:
        daemon.ok("allocate", "--pool", pool, "--owner", owner, "--label", f"team={team}",
                  "--label", "env=test")

    def owners(*args):
        return [lease["owner"] for lease in daemon.json("lease", "list", *args)]

    assert owners() == ["k8s/ns1/x", "k8s/ns1/y", "k8s/ns2/z", "vm/1"]
    assert owners("--pool", "a") == ["k8s/ns1/x", "k8s/ns2/z"]
    assert owners("--owner-prefix", "k8s/ns1/") == ["k8s/ns1/x", "k8s/ns1/y"]
    assert owners("--label", "team=red") == ["k8s/ns1/x", "vm/1"]
    assert owners("--label", "team=blue", "--label", "env=test", "--pool", "b") == ["k8s/ns1/y"]
    assert owners("--label", "team=green") == []
    table = daemon.ok("lease", "list").splitlines()
    assert len(table) == 5 and table[0].startswith("OWNER")


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string_field(number, text):
    raw = text.encode()
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def test_lease_list_follows_page_tokens_to_the_end(daemon):
    # More leases than one default page (1000). They are made with raw gRPC calls
    # (AllocateRequest: pool = 1, owner = 2) because a thousand ipamctl runs are slow.
    count = 1005
    daemon.ok("pool", "apply", "big", "--block", "2001:db8:1::/118")
    with grpc.insecure_channel(daemon.server) as channel:
        allocate = channel.unary_unary("/ipam.v1.Ipam/Allocate")
        for i in range(count):
            allocate(_string_field(1, "big") + _string_field(2, f"owner-{i:05d}"), timeout=10)
    leases = daemon.json("lease", "list", "--pool", "big")
    assert [lease["owner"] for lease in leases] == [f"owner-{i:05d}" for i in range(count)]
    assert len({lease["addresses"][0] for lease in leases}) == count
    assert len(daemon.ok("lease", "list").splitlines()) == count + 1


class Watcher:
    """`ipamctl watch` in the background; lines are read through a queue with a timeout."""

    def __init__(self, daemon, *args):
        self.proc = subprocess.Popen([str(IPAMCTL), "--server", daemon.server, "watch", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self.errors = queue.Queue(), queue.Queue()
        for stream, q in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    @staticmethod
    def _pump(stream, q):
        for line in stream:
            q.put(line)
        q.put(None)

    def wait_started(self):
        line = self.errors.get(timeout=EVENT_TIMEOUT)
        assert line is not None and "watching" in line, line

    def next_line(self):
        line = self.lines.get(timeout=EVENT_TIMEOUT)
        if line is None:
            rc = self.proc.wait(timeout=CMD_TIMEOUT)
            errors = []
            while (e := self.errors.get(timeout=EVENT_TIMEOUT)) is not None:
                errors.append(e)
            pytest.fail(f"ipamctl watch ended early with {rc}: {''.join(errors)}")
        return line

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=CMD_TIMEOUT)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_watch_prints_one_json_object_per_event_until_interrupted(daemon):
    w = Watcher(daemon, "-o", "json")
    try:
        w.wait_started()
        daemon.ok("pool", "apply", "lan", "--block", "192.0.2.0/24")
        lease = daemon.one("allocate", "--pool", "lan", "--owner", "watched")
        daemon.ok("release", "--owner", "watched")
        events = [json.loads(w.next_line()) for _ in range(3)]
        assert [e["type"] for e in events] == ["POOL_PUT", "LEASE_PUT", "LEASE_DELETED"]
        assert events[0]["pool"]["name"] == "lan"
        assert events[1]["lease"]["owner"] == "watched"
        assert events[1]["lease"]["addresses"] == lease["addresses"]
        assert events[0]["revision"] < events[1]["revision"] < events[2]["revision"]
        assert w.stop() == 0
    finally:
        w.kill()


def test_watch_prints_one_line_per_event(daemon):
    w = Watcher(daemon)
    try:
        w.wait_started()
        daemon.ok("pool", "apply", "lan", "--block", "192.0.2.0/24")
        lease = daemon.one("allocate", "--pool", "lan", "--owner", "watched")
        pool_line, lease_line = w.next_line().split(), w.next_line().split()
        assert pool_line[1] == "POOL_PUT" and "pool=lan" in pool_line
        assert lease_line[1] == "LEASE_PUT"
        assert "owner=watched" in lease_line
        assert f"addresses={lease['addresses'][0]}" in lease_line
        assert w.stop() == 0
    finally:
        w.kill()


def test_watch_from_a_revision_replays_the_changes_since(daemon):
    pool = daemon.one("pool", "apply", "lan", "--block", "192.0.2.0/24")
    daemon.ok("allocate", "--pool", "lan", "--owner", "early")
    w = Watcher(daemon, "-o", "json", "--from-revision", str(pool["revision"]))
    try:
        events = [json.loads(w.next_line()) for _ in range(2)]
        assert [e["type"] for e in events] == ["POOL_PUT", "LEASE_PUT"]
        assert events[1]["lease"]["owner"] == "early"
        assert w.stop() == 0
    finally:
        w.kill()
