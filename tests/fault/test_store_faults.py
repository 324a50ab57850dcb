"""Store faults: the data directory becoming full, failing or unwritable.

Two ways to break the store, both switchable at runtime without restarting ipamd:

- tmpfs: the data directory lives on a small tmpfs mounted for the test (root and
  mount permission needed, else those cases are skipped); "on" fills the
  filesystem with a filler file, "off" deletes it.  A real ENOSPC.
- shim: ipamd runs with LD_PRELOAD=failwrite.so (tests/fault/failwrite.c): while
  a control file exists, write/pwrite/fsync/fdatasync/ftruncate on files under the
  data directory fail with the errno it names (ENOSPC, EIO, EROFS; "EIO sync"
  fails only fsync and fdatasync).  Always available.

Checked: while failing, every write RPC that changes something (ApplyPool,
DeletePool, Allocate, Release, Renew) is UNAVAILABLE with a message naming the
store problem; reads (ListPools, GetPool, ListLeases, GetLease, Health, Watch)
keep working and show no trace of the refused writes; once the fault is cleared,
writes succeed without restarting or repairing anything, and a restart (SIGKILL or
SIGTERM) shows exactly the acknowledged state.  A data directory that cannot be
written at start (read-only mount, unprivileged user, shim) or a full filesystem
makes ipamd exit 1 with a message saying why.

The shim comes from $FAILWRITE_SO (CMake passes it), else it is compiled here
with cc.  The binary is $IPAMD (default build/ipamd/ipamd).
"""

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import ipam_client  # noqa: E402
from ipam_client import Daemon, StreamTimeout  # noqa: E402

CMD_TIMEOUT = 30
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TMPFS_SIZE = "2m"


# --------------------------------------------------------------------------
# Fixtures: generated messages, binaries, the shim, mounting.
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    return ipam_client.generate_protos(tmp_path_factory.mktemp("proto-gen"))


@pytest.fixture(scope="session")
def ipamd_path():
    path = ipam_client.ipamd_binary().resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"ipamd binary not found at {path} (set IPAMD or build it first)",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def shim_path(tmp_path_factory):
    env = os.environ.get("FAILWRITE_SO")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.fail(f"FAILWRITE_SO={env} does not exist", pytrace=False)
        return path
    out = tmp_path_factory.mktemp("shim") / "failwrite.so"
    cc = os.environ.get("CC", "cc")
    res = subprocess.run([cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared",
                          "-fPIC", "-o", str(out), str(HERE / "failwrite.c"), "-ldl",
                          "-lpthread"], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        pytest.fail(f"cannot build the shim:\n{res.stderr}", pytrace=False)
    return out


def run(cmd, check=True):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT,
                         stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}): "
                             f"{res.stderr.strip()}")
    return res


_mount_probe = {}


def mount_unavailable():
    """None when this process may mount a tmpfs, else why not (probed once)."""
    if "why" not in _mount_probe:
        why = None
        if os.geteuid() != 0:
            why = "not root"
        elif not shutil.which("mount"):
            why = "no mount command"
        else:
            d = tempfile.mkdtemp(prefix="ipamd-mount-probe-")
            try:
                res = run(["mount", "-t", "tmpfs", "-o", "size=64k", "ipamd-probe", d],
                          check=False)
                if res.returncode != 0:
                    why = f"mount -t tmpfs is not permitted here: {res.stderr.strip()}"
                else:
                    umount(d)
            finally:
                os.rmdir(d)
        _mount_probe["why"] = why
    return _mount_probe["why"]


def umount(path):
    if run(["umount", str(path)], check=False).returncode != 0:
        run(["umount", "-l", str(path)])


def asan_options():
    # An ASan ipamd checks that its runtime comes first among the loaded libraries;
    # the preloaded shim (not instrumented) comes before it, which is harmless.
    old = os.environ.get("ASAN_OPTIONS", "")
    return ":".join(x for x in (old, "verify_asan_link_order=0") if x)


# --------------------------------------------------------------------------
# Faults.
# --------------------------------------------------------------------------

class ShimFault:
    """failwrite.so with a control file; spec is what the control file says."""

    def __init__(self, shim, workdir, spec):
        self.kind = "shim"
        self.spec = spec
        self.data_dir = workdir / "data"
        self.ctl = workdir / "failwrite.ctl"
        self.env = {"LD_PRELOAD": str(shim), "FAILWRITE_DIR": str(self.data_dir),
                    "FAILWRITE_CTL": str(self.ctl), "ASAN_OPTIONS": asan_options()}
        name = spec.split()[0]
        self.expect = "database or disk is full" if name == "ENOSPC" else "disk I/O error"

    def on(self):
        tmp = self.ctl.with_suffix(".tmp")
        tmp.write_text(self.spec + "\n")
        os.replace(tmp, self.ctl)  # atomic: the shim never reads half a spec

    def off(self):
        self.ctl.unlink(missing_ok=True)

    def hits(self):
        p = Path(f"{self.ctl}.hits")
        return p.stat().st_size if p.exists() else 0

    def cleanup(self):
        self.off()


class TmpfsFull:
    """The data directory on a small tmpfs; on() fills it, off() frees it."""

    def __init__(self, workdir):
        self.kind = "tmpfs"
        self.spec = "full"
        self.mnt = workdir / "mnt"
        self.mnt.mkdir()
        run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "ipamd-test",
             str(self.mnt)])
        self.mounted = True
        self.data_dir = self.mnt / "data"
        self.filler = self.mnt / "filler"
        self.env = {}
        self.expect = "database or disk is full"

    def on(self):
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 4096, 1):  # down to the last byte of the last page
                block = b"\0" * chunk
                for _ in range(1 << 20):
                    try:
                        os.write(fd, block)
                    except OSError as e:
                        assert e.errno == errno.ENOSPC, e
                        break
        finally:
            os.close(fd)

    def off(self):
        self.filler.unlink(missing_ok=True)

    def hits(self):
        return None

    def cleanup(self):
        if self.mounted:
            umount(self.mnt)
            self.mounted = False


FAULTS = ["tmpfs-full", "ENOSPC", "EIO", "EIO-fsync-only", "EROFS"]
SHIM_SPECS = {"ENOSPC": "ENOSPC", "EIO": "EIO", "EIO-fsync-only": "EIO sync", "EROFS": "EROFS"}


class FaultDaemon(Daemon):
    """A Daemon whose data directory and environment come from a fault."""

    def __init__(self, binary, workdir, pb, fault):
        super().__init__(binary, workdir, pb)
        self.fault = fault
        self.data_dir = fault.data_dir

    def start(self, timeout=ipam_client.START_TIMEOUT):
        saved = {k: os.environ.get(k) for k in self.fault.env}
        os.environ.update(self.fault.env)
        try:
            return super().start(timeout)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def make_fault(tmp_path, shim_path):
    made = []

    def make(name):
        workdir = tmp_path / f"fault-{len(made)}"
        workdir.mkdir()
        if name == "tmpfs-full":
            why = mount_unavailable()
            if why:
                pytest.skip(f"tmpfs variant: {why} (the shim variants cover the same checks)")
            f = TmpfsFull(workdir)
        else:
            f = ShimFault(shim_path, workdir, SHIM_SPECS[name])
        made.append(f)
        return f, workdir

    yield make
    for f in made:
        f.cleanup()


@pytest.fixture
def daemon_for(request, pb, ipamd_path, make_fault):
    """daemon_for(fault name) -> started FaultDaemon; stopped with SIGTERM (exit 0) after."""
    daemons = []

    def start(name):
        fault, workdir = make_fault(name)
        d = FaultDaemon(ipamd_path, workdir / "ipamd", pb, fault)
        d.workdir.mkdir()
        daemons.append(d)
        d.start()
        return d

    yield start
    errors = []
    for d in daemons:
        try:
            d.fault.off()
            if d.proc is not None:
                d.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            d.cleanup()
            d.fault.cleanup()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


# --------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------

def setup_state(c):
    """Pools and leases the tests refuse to change; returns the owners."""
    c.apply_pool("lan", ["192.0.2.0/28", "2001:db8:f::/124"])
    c.apply_pool("lab", ["198.51.100.0/29"], search_order=c.pb.ipam.SEARCH_ORDER_DESC)
    fam = c.pb.ipam.Family
    c.alloc("lan", "keep")
    c.alloc("lan", "dual", family=fam.FAMILY_REQUIRE_DUAL_STACK, labels={"app": "web"})
    c.alloc("lan", "ren", ttl_seconds=3600)
    c.alloc("lab", "rel")
    c.alloc("", "static", addresses=["203.0.113.5"])


def snapshot(c):
    """Everything the read RPCs show, as text (so a difference is readable)."""
    pools = c.ListPools()
    leases, revisions = c.all_leases(page_size=2)
    snap = {
        "ListLeases": [str(le) for le in leases],
        "ListLeases.revision": revisions,
        "ListPools": str(pools),
        "GetPool": {p.name: str(c.GetPool(name=p.name).pool) for p in pools.pools},
        "GetLease": {le.owner: str(c.GetLease(owner=le.owner).lease) for le in leases},
    }
    return snap, pools.revision


def assert_same(now, before, when):
    for k in before:
        assert now[k] == before[k], f"{when}: {k} changed:\nbefore: {before[k]}\nnow:    {now[k]}"


def expect_refused(fn, fault, what):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    e = ei.value
    assert e.code() == UNAVAILABLE, f"{what}: {e.code()} {e.details()}, expected UNAVAILABLE"
    d = e.details()
    assert "store unavailable" in d and str(fault.data_dir / "ipamd.db") in d and \
        fault.expect in d, f"{what}: the message does not name the store problem: {d!r}"


def expect_not_found(fn, what):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    assert ei.value.code() == NOT_FOUND, f"{what}: {ei.value.code()} {ei.value.details()}"


def refused_writes(c):
    """Every kind of write that would change something, with a name."""
    pb = c.pb.ipam
    fam = pb.Family
    return [
        ("ApplyPool (new pool)", lambda: c.apply_pool("new", ["192.0.2.64/28"])),
        ("ApplyPool (changed pool)",
         lambda: c.apply_pool("lan", ["192.0.2.0/27", "2001:db8:f::/124"])),
        ("DeletePool", lambda: c.DeletePool(name="lab", force=True)),
        ("Allocate (new owner)", lambda: c.alloc("lan", "new-owner")),
        ("Allocate (dual stack, TTL)", lambda: c.alloc(
            "lan", "new-dual", family=fam.FAMILY_REQUIRE_DUAL_STACK, ttl_seconds=60)),
        ("Allocate (requested address)",
         lambda: c.alloc("lan", "new-requested", addresses=["192.0.2.9"])),
        ("Allocate (static reservation)",
         lambda: c.alloc("", "new-static", addresses=["203.0.113.9"])),
        ("Release", lambda: c.Release(owner="rel")),
        ("Renew", lambda: c.Renew(owner="ren", ttl_seconds=7200)),
        ("Renew (adds a TTL)", lambda: c.Renew(owner="keep", ttl_seconds=60)),
    ]


def commit_failures(d):
    return d.stderr_text().count("store commit failed")


def cpu_seconds(d):
    """User + system CPU time ipamd has used so far."""
    fields = Path(f"/proc/{d.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# While failing: writes refused, reads unchanged; after: writes succeed.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("ending", ["SIGKILL", "SIGTERM"])
def test_while_the_store_fails_writes_are_refused_reads_show_no_trace_and_writes_resume_after(
        daemon_for, fault, ending):
    d = daemon_for(fault)
    c = d.client
    setup_state(c)
    before, rev = snapshot(c)
    with c.Watch(from_revision=rev + 1) as watch:
        watch.header()
        d.fault.on()
        for _ in range(2):  # twice: a refused batch leaves the store usable for the next
            for what, fn in refused_writes(c):
                expect_refused(fn, d.fault, what)
        # Concurrent writes (batched by group commit as they arrive) are all refused.
        futures = [c.Allocate.future(pool="lan", owner=f"burst-{i}") for i in range(8)]
        for i, f in enumerate(futures):
            expect_refused(f.result, d.fault, f"concurrent Allocate burst-{i}")
        if d.fault.hits() is not None:
            assert d.fault.hits() > 0, "the shim never failed a call"

        # Reads keep working and show nothing of the refused writes.
        now, now_rev = snapshot(c)
        assert_same(now, before, "during the fault")
        assert now_rev == rev
        for owner in ["new-owner", "new-dual", "new-requested", "new-static", "burst-0"]:
            expect_not_found(lambda: c.GetLease(owner=owner), f"GetLease {owner}")
        expect_not_found(lambda: c.GetPool(name="new"), "GetPool new")
        serving = c.pb.health.HealthCheckResponse.SERVING
        assert c.health.Check(service="").status == serving
        assert c.health.Check(service="ipam.v1.Ipam").status == serving
        assert c.ListLeases(pool="lab").leases[0].owner == "rel"
        # A Watch opened during the fault starts at the unchanged revision.
        with c.Watch(from_revision=0) as w2:
            assert w2.header().revision == rev

        # Cleared: the same writes succeed, without a restart or any repair.
        d.fault.off()
        lease = c.alloc("lan", "new-owner")
        assert lease.revision == rev + 1, "the refused writes used up revisions"
        c.Release(owner="rel")
        c.Renew(owner="ren", ttl_seconds=7200)
        c.apply_pool("new", ["192.0.2.64/28"])
        c.alloc("", "new-static", addresses=["203.0.113.9"])
        # The watch saw exactly these changes, from rev + 1, and nothing refused.
        events = watch.take_events(5)
        assert [e.revision for e in events] == list(range(rev + 1, rev + 6))
        assert [(e.reason, e.lease.owner or e.pool.name) for e in events] == [
            ("allocated", "new-owner"), ("released", "rel"), ("renewed", "ren"),
            ("created", "new"),
            ("allocated", "new-static")]
    after, after_rev = snapshot(c)
    assert after_rev == rev + 5

    # A restart shows exactly the acknowledged state.
    if ending == "SIGKILL":
        d.kill()
    else:
        d.stop()
    d.start()
    restarted, restarted_rev = snapshot(d.client)
    assert_same(restarted, after, f"after {ending} and restart")
    assert restarted_rev == after_rev


# --------------------------------------------------------------------------
# A refused write never comes back.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("ending", ["SIGKILL after the fault cleared",
                                    "SIGTERM after the fault cleared",
                                    "SIGTERM while still failing"])
def test_writes_refused_by_the_store_do_not_reappear_after_a_restart(daemon_for, fault, ending):
    """The store refused these writes (UNAVAILABLE: "a request that fails changes
    nothing") and no write succeeded since: a restart must not bring them back."""
    d = daemon_for(fault)
    c = d.client
    setup_state(c)
    before, rev = snapshot(c)
    d.fault.on()
    expect_refused(lambda: c.alloc("lan", "refused"), d.fault, "Allocate")
    expect_refused(lambda: c.Release(owner="rel"), d.fault, "Release")
    expect_refused(lambda: c.Renew(owner="ren", ttl_seconds=7200), d.fault, "Renew")
    expect_refused(lambda: c.apply_pool("refused", ["192.0.2.64/28"]), d.fault, "ApplyPool")
    now, _ = snapshot(c)
    assert_same(now, before, "during the fault")
    if ending.startswith("SIGTERM while"):
        d.stop()
        d.fault.off()
    else:
        d.fault.off()
        if ending.startswith("SIGKILL"):
            d.kill()
        else:
            d.stop()
    d.start()
    c = d.client
    restarted, restarted_rev = snapshot(c)
    assert_same(restarted, before, f"after {ending} and restart (refused writes came back)")
    assert restarted_rev == rev
    assert c.alloc("lan", "after").revision == rev + 1


# --------------------------------------------------------------------------
# An expiry the store cannot record.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["tmpfs-full", "ENOSPC"])
def test_an_expiry_the_store_cannot_record_is_retried_without_spinning(daemon_for, fault):
    """A lease falls due while the store fails: ipamd keeps serving, does not spin
    on the failing commit (nor flood its log), and records the expiry once the
    store works again."""
    d = daemon_for(fault)
    c = d.client
    setup_state(c)
    # expire_time is whole seconds (time() + ttl), so a ttl of 1 may fall due within
    # milliseconds; 3 leaves at least two seconds to turn the fault on first.
    c.alloc("lan", "short", ttl_seconds=3)
    with c.Watch(from_revision=0) as watch:
        watch.header()
        d.fault.on()
        assert c.GetLease(owner="short").lease.owner == "short", (
            "the lease expired before the store failed: this run was too slow to test it")
        # Wait, bounded, until the lease is due and the first attempt to record it
        # has failed (the expiry timer fires at expire_time).
        deadline = time.monotonic() + 10
        base = commit_failures(d)
        never = threading.Event()
        while commit_failures(d) == base:
            assert time.monotonic() < deadline, "the expiry was never attempted"
            never.wait(0.05)
        # Over the next two seconds no event may be published (nothing is stored);
        # meanwhile count the commits ipamd attempts and the CPU it uses.
        n0, cpu0 = commit_failures(d), cpu_seconds(d)
        with pytest.raises(StreamTimeout):
            watch.next_event(timeout=2.0)
        attempts, cpu = commit_failures(d) - n0, cpu_seconds(d) - cpu0
        assert attempts <= 10 and cpu < 0.5, (
            f"{attempts} failed commits and {cpu:.2f} s of CPU in 2 s for one due expiry: "
            f"ipamd retries in a busy loop while the store fails")
        assert c.health.Check(service="").status == c.pb.health.HealthCheckResponse.SERVING
        expect_refused(lambda: c.alloc("lan", "x"), d.fault, "Allocate")
        d.fault.off()
        ev = watch.wait_event(lambda e: e.lease.owner == "short", timeout=10)
        assert ev.reason == "expired"
    d.stop()
    d.start()
    assert [le.owner for le in d.client.all_leases()[0]] == ["dual", "keep", "rel", "ren",
                                                              "static"]


# --------------------------------------------------------------------------
# At start.
# --------------------------------------------------------------------------

def run_ipamd(ipamd_path, data_dir, sock_dir, env=None, prefix=()):
    p = subprocess.run([*prefix, str(ipamd_path), "--listen", f"unix:{sock_dir}/s.sock",
                        "--data-dir", str(data_dir)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=CMD_TIMEOUT, env={**os.environ, **(env or {})})
    return p.returncode, p.stderr + p.stdout


def make_database(ipamd_path, pb, workdir, data_dir):
    """A data directory with a pool and a lease, closed cleanly."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    d = Daemon(ipamd_path, workdir, pb)
    d.data_dir = Path(data_dir)
    try:
        d.start()
        d.client.apply_pool("lan", ["192.0.2.0/28"])
        d.client.alloc("lan", "keep")
        d.stop()
    finally:
        d.cleanup()


def dir_state(path):
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()}


def assert_starts_with_the_lease(ipamd_path, pb, workdir, data_dir):
    Path(workdir).mkdir(parents=True, exist_ok=True)
    d = Daemon(ipamd_path, workdir, pb)
    d.data_dir = Path(data_dir)
    try:
        d.start()
        assert [le.owner for le in d.client.all_leases()[0]] == ["keep"]
        d.stop()
    finally:
        d.cleanup()


START_METHODS = ["read-only mount", "unprivileged user", "shim EACCES", "shim EROFS"]


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("state", ["no data directory yet", "empty data directory",
                                   "existing database"])
def test_ipamd_refuses_to_start_on_a_data_directory_it_cannot_write(
        method, state, pb, ipamd_path, shim_path, tmp_path):
    # A world-traversable base (pytest's tmp dirs are 0700) for the unprivileged user.
    base = Path(tempfile.mkdtemp(prefix="ipamd-rodir-"))
    base.chmod(0o755)
    mounted = None
    try:
        src = base / "src"
        src.mkdir()
        src.chmod(0o755)
        data = src / "data"
        if state == "existing database":
            make_database(ipamd_path, pb, tmp_path / "make", data)
        elif state == "empty data directory":
            data.mkdir()
        env, prefix = {}, ()
        if method == "read-only mount":
            why = mount_unavailable()
            if why:
                pytest.skip(why)
            ro = base / "ro"
            ro.mkdir()
            run(["mount", "--bind", str(src), str(ro)])
            mounted = ro
            run(["mount", "-o", "remount,bind,ro", str(ro)])
            data_arg = ro / "data"
            reason = "Read-only file system"
        elif method == "unprivileged user":
            if os.geteuid() != 0 or not shutil.which("setpriv"):
                pytest.skip("needs root and setpriv to run ipamd as another user")
            if not os.access(ipamd_path, os.X_OK) or any(
                    not (p.stat().st_mode & 0o001) for p in ipamd_path.parents):
                pytest.skip(f"{ipamd_path} is not reachable by other users")
            nobody = 65534
            if data.exists():
                for p in [data, *data.iterdir()]:
                    os.chown(p, nobody, nobody)
                data.chmod(0o555)  # the user's own directory, without write permission
            prefix = ("setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups")
            data_arg = data
            reason = ("Permission denied", "readonly database")
        else:
            spec = method.split()[1]
            ctl = base / "ctl"
            ctl.write_text(f"{spec} open write sync truncate\n")
            env = {"LD_PRELOAD": str(shim_path), "FAILWRITE_DIR": str(data),
                   "FAILWRITE_CTL": str(ctl), "ASAN_OPTIONS": asan_options()}
            data_arg = data
            reason = "Permission denied" if spec == "EACCES" else "Read-only file system"
        before = dir_state(data) if data.exists() else None

        code, err = run_ipamd(ipamd_path, data_arg, base, env=env, prefix=prefix)

        assert code == 1, f"ipamd exited with {code}, expected 1:\n{err}"
        assert "cannot open the store" in err and str(data_arg) in err, err
        reasons = reason if isinstance(reason, tuple) else (reason,)
        assert any(r in err for r in reasons), f"the message does not say why: {err}"
        assert "serving on" not in err, err
        if before is not None:
            assert dir_state(data) == before, "the data directory was changed"
        if state == "existing database":
            if method == "unprivileged user":
                data.chmod(0o750)
            assert_starts_with_the_lease(ipamd_path, pb, tmp_path / "after", data)
    finally:
        if mounted is not None:
            umount(mounted)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("fault", ["tmpfs-full", "ENOSPC"])
def test_ipamd_refuses_to_start_on_a_full_filesystem_without_a_database(
        fault, make_fault, ipamd_path):
    f, workdir = make_fault(fault)
    f.on()
    code, err = run_ipamd(ipamd_path, f.data_dir, workdir, env=f.env)
    assert code == 1, f"ipamd exited with {code}, expected 1:\n{err}"
    assert "cannot open the store" in err and str(f.data_dir) in err, err
    assert "database or disk is full" in err, f"the message does not say the disk is full: {err}"
    f.off()


def test_a_full_filesystem_at_start_keeps_the_database_and_says_so(
        make_fault, pb, ipamd_path, tmp_path):
    """With a database on a full filesystem ipamd either serves it (reads work,
    writes are refused) or exits 1 naming the store problem; the data survives."""
    f, workdir = make_fault("tmpfs-full")
    make_database(ipamd_path, pb, workdir / "make", f.data_dir)
    before = dir_state(f.data_dir)
    f.on()
    d = FaultDaemon(ipamd_path, workdir / "ipamd", pb, f)
    d.workdir.mkdir()
    try:
        try:
            d.start()
            served = True
        except AssertionError:
            served = False
        if served:
            assert [le.owner for le in d.client.all_leases()[0]] == ["keep"]
            expect_refused(lambda: d.client.alloc("lan", "x"), f, "Allocate")
            d.stop()
        else:
            err = d.stderr_text()
            assert d.exit_codes[-1] == 1, err
            assert "cannot open the store" in err and str(f.data_dir) in err, err
            assert any(s in err for s in ("disk is full", "No space left", "disk I/O error")), err
            assert {k: v for k, v in dir_state(f.data_dir).items() if k in before} == before
    finally:
        d.cleanup()
    f.off()
    assert_starts_with_the_lease(ipamd_path, pb, workdir / "after", f.data_dir)
