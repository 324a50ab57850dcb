"""`cmake --install` stages the standalone (systemd) deployment, and what it
stages works.

The build directory ($IPAM_BUILD_DIR) is installed with DESTDIR into a temporary
root, at the prefix it was configured with; $IPAM_INSTALL_LAYOUT (written by
deploy/CMakeLists.txt) says where each part goes. PID 1 here need not be
systemd, so the unit is checked with systemd-analyze and its settings are
re-created around the installed ipamd: its user and group (setpriv, as root),
umask, directory modes, system call filter and address families (strace).

Servers listen on Unix sockets in temporary directories only, pools use
documentation ranges only, and waiting polls a condition with a deadline.
"""

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

BUILD_DIR = Path(os.environ.get("IPAM_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
LAYOUT_FILE = Path(os.environ.get("IPAM_INSTALL_LAYOUT",
                                  BUILD_DIR / "deploy" / "install-layout.json"))
CMAKE = os.environ.get("IPAM_CMAKE", "cmake")
START_TIMEOUT = 30
STOP_TIMEOUT = 30
UNPRIVILEGED = 65534  # nobody / nogroup: the unit's user and group, re-created
OUTSIDER = 65533      # a local client, in the group or not

# The packages these tools come from on Debian 12 (scripts/deps installs them).
TOOLS = {"systemd-analyze": "systemd", "systemd-sysusers": "systemd", "sqlite3": "sqlite3",
         "strace": "strace", "pkg-config": "pkg-config", "cc": "build-essential"}


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}' is not installed (Debian package {TOOLS[name]})", pytrace=False)
    return path


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.02)


def cmake_cache(name):
    try:
        text = (BUILD_DIR / "CMakeCache.txt").read_text()
    except FileNotFoundError:
        return None
    m = re.search(rf"^{re.escape(name)}:[A-Z]+=(.*)$", text, re.M)
    return m.group(1) if m else None


def sanitized():
    """Whether the build is an IPAM_SANITIZE one (ASan and UBSan in every program)."""
    return (cmake_cache("IPAM_SANITIZE") or "").upper() in ("ON", "TRUE", "YES", "1")


def parse_unit(text):
    """{section: {key: [values in order]}}; systemd unit syntax without continuations."""
    unit, section = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"line {n}: continuation lines are not expected"
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"line {n}: not `key=value' in a section: {line!r}"
        section.setdefault(key, []).append(value)
    return unit


def the(unit, section, key):
    values = unit[section].get(key)
    assert values and len(values) == 1, f"[{section}] {key}= is not set exactly once: {values}"
    return values[0]


def cmake_install(destdir, *extra):
    env = dict(os.environ, DESTDIR=str(destdir))
    return subprocess.run([CMAKE, "--install", str(BUILD_DIR), *extra], env=env,
                          capture_output=True, text=True, timeout=300)


class Stage:
    """An install of the build directory under root (DESTDIR), with its layout."""

    def __init__(self, root):
        self.root = Path(root)
        self.layout = json.loads(LAYOUT_FILE.read_text())
        r = cmake_install(self.root)
        assert r.returncode == 0, f"cmake --install failed:\n{r.stdout}\n{r.stderr}"
        self.install_log = r.stdout

    def at(self, path):
        """The staged location of an absolute installed path."""
        assert os.path.isabs(path), path
        return self.root / str(path).lstrip("/")

    def dir(self, key):
        return self.layout[key]

    @property
    def ipamd(self):
        return self.at(f"{self.dir('sbindir')}/ipamd")

    @property
    def ipamctl(self):
        return self.at(f"{self.dir('bindir')}/ipamctl")

    @property
    def unit_path(self):
        return self.at(f"{self.dir('unitdir')}/ipamd.service")

    @property
    def unit(self):
        return parse_unit(self.unit_path.read_text())

    @property
    def example(self):
        return self.at(f"{self.dir('docdir')}/examples/pools.conf")

    @property
    def etc_pools(self):
        return self.at(f"{self.dir('sysconfdir')}/ipamd/pools.conf")


@pytest.fixture(scope="module")
def stage():
    script = BUILD_DIR / "cmake_install.cmake"
    if not LAYOUT_FILE.is_file() or "/deploy/cmake_install.cmake" not in script.read_text():
        pytest.fail(f"deploy/ is not part of the build in {BUILD_DIR} "
                    "(the top-level CMakeLists.txt needs add_subdirectory(deploy))", pytrace=False)
    # A directory others can traverse: some tests run the staged programs as
    # another user.
    root = Path(tempfile.mkdtemp(prefix="ipamd-install-"))
    root.chmod(0o755)
    try:
        yield Stage(root / "stage")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(stage):
    """A fresh directory next to the stage (short Unix socket paths, reachable by others)."""
    d = Path(tempfile.mkdtemp(prefix="w-", dir=stage.root.parent))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pools_of(conf_text):
    """{pool name: [ip_network, ...]} from a pools file (ranges become their networks)."""
    pools, name = {}, None
    for line in conf_text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[pool\s+(\S+)\]", line)
        if m:
            name = m.group(1)
            pools[name] = []
            continue
        key, _, value = (s.strip() for s in line.partition("="))
        if key == "blocks":
            for b in (x.strip() for x in value.split(",")):
                if "-" in b:
                    lo, hi = (ipaddress.ip_address(x) for x in b.split("-"))
                    pools[name].extend(ipaddress.summarize_address_range(lo, hi))
                else:
                    pools[name].append(ipaddress.ip_network(b))
    return pools


DOC_RANGES = [ipaddress.ip_network(n) for n in
              ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


class Ipamd:
    """An installed ipamd on a Unix socket; stop() sends SIGTERM and wants exit 0."""

    def __init__(self, stage, socket, data_dir, config=None, prefix=(), umask=None):
        self.stage, self.socket, self.data_dir = stage, Path(socket), Path(data_dir)
        argv = [*prefix, str(stage.ipamd), "--listen", f"unix:{self.socket}",
                "--data-dir", str(self.data_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, umask=-1 if umask is None else umask)
        self.pid = self.proc.pid

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def ctl(self, *args, user=()):
        return subprocess.run([*user, str(self.stage.ipamctl), "--server", f"unix:{self.socket}",
                               "-o", "json", *args], capture_output=True, text=True, timeout=30)

    def wait_serving(self):
        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(f"ipamd exited with {self.proc.returncode}:\n{self.log()}")
            return self.ctl("health").returncode == 0
        wait_until(serving, START_TIMEOUT, "`ipamctl health' says SERVING")
        return self

    def stop(self, pid=None):
        """SIGTERM to ipamd (pid, when a wrapper such as strace runs it)."""
        os.kill(pid or self.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ipamd did not stop on SIGTERM:\n{self.log()}")
        assert code == 0, f"ipamd exited with {code} on SIGTERM:\n{self.log()}"

    def children(self):
        try:
            return [int(p) for p in
                    Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            return []

    def kill(self):
        """SIGKILL to what is left, ipamd under a wrapper included."""
        if self.proc.poll() is None:
            for pid in self.children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait()


def allocate(d, pool, owner, *extra):
    r = d.ctl("allocate", "--pool", pool, "--owner", owner, *extra)
    assert r.returncode == 0, f"allocate from {pool} failed ({r.returncode}): {r.stderr}"
    return json.loads(r.stdout)


# --- what is installed ---------------------------------------------------------------

def test_every_part_is_installed_with_its_mode(stage):
    L = stage.dir
    expected = [
        (f"{L('sbindir')}/ipamd", 0o755),
        (f"{L('bindir')}/ipamctl", 0o755),
        (f"{L('bindir')}/k8s-adapter", 0o755),
        (f"{L('unitdir')}/ipamd.service", 0o644),
        (f"{L('sysusersdir')}/ipamd.conf", 0o644),
        (f"{L('sysconfdir')}/ipamd/pools.conf", 0o644),
        (f"{L('docdir')}/examples/pools.conf", 0o644),
        (f"{L('docdir')}/README.md", 0o644),
        (f"{L('libdir')}/libipamclient.a", 0o644),
        (f"{L('libdir')}/pkgconfig/ipamclient.pc", 0o644),
        (f"{L('includedir')}/ipamclient/ipam/client.h", 0o644),
        (f"{L('includedir')}/ipamclient/ipam/v1/ipam.pb-c.h", 0o644),
        (f"{L('includedir')}/ipamclient/grpc/health/v1/health.pb-c.h", 0o644),
    ]
    problems = []
    for path, mode in expected:
        p = stage.at(path)
        if not p.is_file():
            problems.append(f"{path}: missing")
        elif stat.S_IMODE(p.stat().st_mode) != mode:
            problems.append(f"{path}: mode {stat.S_IMODE(p.stat().st_mode):04o}, not {mode:04o}")
    assert not problems, "\n".join(problems) + f"\n\ninstall log:\n{stage.install_log}"
    # Nothing of the build tree's internals (libipam, the core, test programs).
    installed = sorted(str(p.relative_to(stage.root)) for p in stage.root.rglob("*") if p.is_file())
    assert len(installed) == len(expected), "unexpected files:\n" + "\n".join(
        f for f in installed if "/" + f not in {e[0] for e in expected})
    assert stage.example.read_bytes() == (
        Path(__file__).resolve().parents[2] / "deploy/examples/pools.conf").read_bytes()


def test_the_unit_runs_the_installed_ipamd_with_options_it_accepts(stage):
    prefix = cmake_cache("CMAKE_INSTALL_PREFIX")
    assert prefix and stage.dir("prefix") == prefix
    unit = stage.unit
    argv = shlex.split(the(unit, "Service", "ExecStart"))
    assert argv[0] == f"{stage.dir('sbindir')}/ipamd"
    assert argv[0].startswith(prefix.rstrip("/") + "/"), f"{argv[0]} is not under {prefix}"
    assert os.access(stage.at(argv[0]), os.X_OK)

    help_text = subprocess.run([stage.ipamd, "--help"], capture_output=True, text=True,
                               timeout=30, check=True).stdout
    known = set(re.findall(r"^\s+(--[a-z][a-z-]*)", help_text, re.M))
    assert "--listen" in known, help_text
    opts, i = {}, 1
    while i < len(argv):
        flag = argv[i]
        assert flag in known, f"ExecStart passes {flag}, which ipamd --help does not list"
        opts[flag] = argv[i + 1] if i + 1 < len(argv) else None
        i += 2
    runtime = the(unit, "Service", "RuntimeDirectory")
    state = the(unit, "Service", "StateDirectory")
    assert opts["--listen"].startswith(f"unix:/run/{runtime}/"), opts["--listen"]
    assert opts["--data-dir"] == f"/var/lib/{state}"
    assert opts["--config"] == f"{stage.dir('sysconfdir')}/ipamd/pools.conf"
    assert stage.at(opts["--config"]).is_file()
    # The group reaches the socket: 0660 socket in a 0750 directory.
    assert int(opts.get("--socket-mode", "0660"), 8) == 0o660
    assert int(the(unit, "Service", "RuntimeDirectoryMode"), 8) & 0o050 == 0o050
    assert the(unit, "Service", "User") == the(unit, "Service", "Group") == "ipamd"
    assert "ExecReload" not in unit["Service"], "ipamd has no reload (SIGHUP would kill it)"
    assert the(unit, "Service", "KillSignal") == "SIGTERM"


def test_systemd_analyze_verifies_the_unit_and_rates_its_exposure_ok(stage, workdir):
    analyze = tool("systemd-analyze")
    # verify wants ExecStart's binary to exist: check a copy that points into the stage.
    text = stage.unit_path.read_text()
    binary = f"{stage.dir('sbindir')}/ipamd"
    assert f"ExecStart={binary} " in text
    copy = workdir / "ipamd.service"
    copy.write_text(text.replace(f"ExecStart={binary} ", f"ExecStart={stage.ipamd} "))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ipamd.service" not in r.stderr, r.stdout + r.stderr

    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(copy)],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for ipamd\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, f"exposure {m.group(1)} (above 2.0):\n{r.stdout}"


def test_the_sysusers_entry_creates_the_ipamd_user_and_group(stage, workdir):
    sysusers = tool("systemd-sysusers")
    (workdir / "etc").mkdir()
    conf = stage.at(f"{stage.dir('sysusersdir')}/ipamd.conf")
    r = subprocess.run([sysusers, f"--root={workdir}", str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    def entries(name):
        lines = (workdir / "etc" / name).read_text().splitlines()
        return {f[0]: f for f in (ln.split(":") for ln in lines if ln)}
    users, groups = entries("passwd"), entries("group")
    assert "ipamd" in users and "ipamd" in groups, (users, groups)
    user, group = users["ipamd"], groups["ipamd"]
    assert user[3] == group[2], "ipamd's primary group is not group ipamd"
    assert 0 < int(user[2]) < 1000, f"not a system user: uid {user[2]}"
    assert user[6].endswith("nologin")
    assert user[5] == "/var/lib/" + the(stage.unit, "Service", "StateDirectory")


# --- the installed programs ----------------------------------------------------------

def test_the_installed_ipamd_and_ipamctl_serve_the_example_pools(stage, workdir):
    pools = pools_of(stage.example.read_text())
    assert pools, "the example defines no pool"
    for name, nets in pools.items():
        assert nets and all(any(n.subnet_of(d) for d in DOC_RANGES if d.version == n.version)
                            for n in nets), f"pool {name}: not documentation ranges: {nets}"
    (workdir / "run").mkdir()
    d = Ipamd(stage, workdir / "run/ipamd.sock", workdir / "data", config=stage.example)
    try:
        d.wait_serving()
        mode = d.socket.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, f"socket mode {mode:o}"
        for name, nets in pools.items():
            lease = allocate(d, name, f"install-test/{name}")
            assert lease["pool"] == name and lease["addresses"], lease
            for a in lease["addresses"]:
                ip = ipaddress.ip_address(a)
                assert any(ip in n for n in nets), f"{a} is not in pool {name}: {nets}"
        d.stop()
    finally:
        d.kill()
    assert (workdir / "data/ipamd.db").is_file()


def test_the_units_pools_file_holds_the_example_commented_out_and_starts_ipamd_without_pools(
        stage, workdir):
    text = stage.etc_pools.read_text()
    assert pools_of(text) == {}, "the unit's pools file defines pools"
    for line in stage.example.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.search(rf"^#\s*{re.escape(line)}$", text, re.M), f"{line!r} is not in it"
    d = Ipamd(stage, workdir / "ipamd.sock", workdir / "data", config=stage.etc_pools)
    try:
        d.wait_serving()
        r = d.ctl("pool", "list")
        assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
        d.stop()
    finally:
        d.kill()


def unit_directory(path, mode, uid, gid):
    path.mkdir()
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def as_user(uid, gid, groups=()):
    """setpriv arguments for a process as the unit runs it: no capabilities at all,
    no_new_privs (NoNewPrivileges=yes, CapabilityBoundingSet=)."""
    g = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return [shutil.which("setpriv") or "setpriv", f"--reuid={uid}",
            f"--regid={gid}", *g, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def unit_umask(stage):
    return int(the(stage.unit, "Service", "UMask"), 8)


def test_under_the_units_umask_the_socket_stays_0660_and_the_database_is_private(stage, workdir):
    umask = unit_umask(stage)
    d = Ipamd(stage, workdir / "ipamd.sock", workdir / "data", config=stage.example, umask=umask)
    try:
        d.wait_serving()
        assert stat.S_IMODE(d.socket.lstat().st_mode) == 0o660
        allocate(d, next(iter(pools_of(stage.example.read_text()))), "umask-test")
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.data_dir.iterdir()}
        assert {"ipamd.db", "LOCK"} <= files.keys(), files
        assert all(m & umask == 0 and m & 0o077 == 0 for m in files.values()), \
            f"files others can use under the unit's UMask={umask:04o}: " + \
            ", ".join(f"{n} {m:04o}" for n, m in sorted(files.items()))
        d.stop()
    finally:
        d.kill()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run ipamd as another user")
def test_as_the_units_user_ipamd_serves_members_of_its_group_and_no_one_else(stage, workdir):
    unit = stage.unit
    run = unit_directory(workdir / "run", int(the(unit, "Service", "RuntimeDirectoryMode"), 8),
                         UNPRIVILEGED, UNPRIVILEGED)
    data = unit_directory(workdir / "data", int(the(unit, "Service", "StateDirectoryMode"), 8),
                          UNPRIVILEGED, UNPRIVILEGED)
    d = Ipamd(stage, run / "ipamd.sock", data, config=stage.example,
              prefix=as_user(UNPRIVILEGED, UNPRIVILEGED), umask=unit_umask(stage))
    try:
        d.wait_serving()
        st = d.socket.lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (UNPRIVILEGED, UNPRIVILEGED,
                                                                   0o660)
        member = as_user(OUTSIDER, OUTSIDER, groups=[UNPRIVILEGED])
        r = d.ctl("health", user=member)
        assert r.returncode == 0, f"a member of the group is refused: {r.stderr}"
        r = d.ctl("health", user=as_user(OUTSIDER, OUTSIDER))
        assert r.returncode != 0 and "Permission denied" in r.stderr, \
            f"a user outside the group was not refused: {r.returncode} {r.stdout} {r.stderr}"
        for p in data.iterdir():
            st = p.stat()
            assert st.st_uid == UNPRIVILEGED and stat.S_IMODE(st.st_mode) & 0o077 == 0, p
        d.stop()
    finally:
        d.kill()


def syscall_set(analyze, names):
    """The system calls of a systemd SystemCallFilter= list, groups expanded."""
    out = subprocess.run([analyze, "syscall-filter", "--no-pager", *names], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    calls = set()
    for line in out.splitlines():
        if not line.startswith("    "):
            continue  # the group's own name heads its list
        t = line.strip()
        if t.startswith("@"):
            calls |= syscall_set(analyze, [t])
        elif t and not t.startswith("#"):
            calls.add(t)
    return calls


@pytest.mark.skipif(sanitized(),
                    reason="the sanitizers' runtime makes system calls of its own (setrlimit)")
def test_ipamd_makes_only_system_calls_and_sockets_the_units_filters_allow(stage, workdir):
    analyze, strace = tool("systemd-analyze"), tool("strace")
    unit = stage.unit["Service"]
    filters = unit["SystemCallFilter"]
    assert not filters[0].startswith("~"), "the first SystemCallFilter= is not an allow list"
    allowed = syscall_set(analyze, filters[0].split())
    for f in filters[1:]:
        assert f.startswith("~")
        allowed -= syscall_set(analyze, f[1:].split())
    families = set(the(stage.unit, "Service", "RestrictAddressFamilies").split())

    # As the unit runs it when root can (SQLite fchown()s its files only as root).
    root = os.geteuid() == 0 and shutil.which("setpriv")
    ids = (UNPRIVILEGED, UNPRIVILEGED) if root else (os.geteuid(), os.getegid())
    run = unit_directory(workdir / "run", 0o750, *ids)
    data = unit_directory(workdir / "data", 0o700, *ids)
    trace = run / "trace"
    prefix = (as_user(*ids) if root else []) + [strace, "-f", "-qq", "-o", str(trace)]
    d = Ipamd(stage, run / "ipamd.sock", data, config=stage.example, prefix=prefix,
              umask=unit_umask(stage))
    try:
        d.wait_serving()
        pool = next(iter(pools_of(stage.example.read_text())))
        allocate(d, pool, "syscall-test")
        assert d.ctl("renew", "--owner", "syscall-test").returncode == 0
        assert d.ctl("lease", "list").returncode == 0
        assert d.ctl("release", "--owner", "syscall-test").returncode == 0
        # strace exits with the status of ipamd, its child.
        children = d.children()
        assert len(children) == 1, children
        d.stop(pid=children[0])
    finally:
        d.kill()
    text = trace.read_text()
    assert "ipamd" in text.splitlines()[0] and "execve(" in text.splitlines()[0]
    calls = set(re.findall(r"^\d+\s+([a-z0-9_]+)\(", text, re.M))
    assert {"bind", "accept4", "fdatasync"} & calls, "the trace misses ipamd's work"
    assert not calls - allowed, f"calls outside SystemCallFilter=: {sorted(calls - allowed)}"
    used = set(re.findall(r"\bsocket(?:pair)?\((AF_[A-Z0-9]+)", text))
    assert used and not used - families, f"families outside RestrictAddressFamilies=: {used}"
    wx = [ln for ln in text.splitlines()
          if re.search(r"\b(mmap|mprotect|pkey_mprotect)\(", ln) and "PROT_EXEC" in ln
          and ("PROT_WRITE" in ln or "mprotect(" in ln)]
    assert not wx, "MemoryDenyWriteExecute= would refuse:\n" + "\n".join(wx[:5])


# --- install rules -------------------------------------------------------------------

def test_reinstalling_keeps_the_operators_pools_file_and_refreshes_the_rest(stage, workdir):
    s = Stage(workdir / "stage")
    mine = "# the operator's pools\n[pool mine]\nblocks = 203.0.113.0/28\n"
    s.etc_pools.write_text(mine)
    s.example.write_text("# changed\n")
    s.unit_path.write_text("# changed\n")
    r = cmake_install(s.root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert s.etc_pools.read_text() == mine
    assert s.example.read_text() == stage.example.read_text()
    assert s.unit_path.read_text() == stage.unit_path.read_text()


def test_installing_to_another_prefix_than_configured_is_refused(stage, workdir):
    other = workdir / "other"
    r = cmake_install(workdir / "destdir", "--prefix", str(other))
    assert r.returncode != 0, "cmake --install --prefix OTHER succeeded:\n" + r.stdout
    assert "-DCMAKE_INSTALL_PREFIX=" in r.stderr and "DESTDIR" in r.stderr, r.stderr
    unit = f"{stage.dir('unitdir')}/ipamd.service"
    assert not (workdir / "destdir" / unit.lstrip("/")).exists(), "the unit was installed"
    assert not list(other.rglob("ipamd.service")), "the unit was installed"


def test_a_program_builds_against_the_installed_libipamclient_and_allocates(stage, workdir):
    pkgconfig, cc = tool("pkg-config"), tool("cc")
    pc = stage.at(f"{stage.dir('libdir')}/pkgconfig/ipamclient.pc").read_text()
    prefix = stage.dir("prefix")
    assert re.search(rf"^prefix={re.escape(prefix)}$", pc, re.M), pc
    # The same file with its prefix moved into the stage.
    pcdir = workdir / "pkgconfig"
    pcdir.mkdir()
    (pcdir / "ipamclient.pc").write_text(
        re.sub(r"^prefix=.*$", f"prefix={stage.at(prefix)}", pc, flags=re.M))
    env = dict(os.environ, PKG_CONFIG_PATH=str(pcdir))
    flags = subprocess.run([pkgconfig, "--cflags", "--libs", "ipamclient"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert flags.returncode == 0, flags.stderr
    assert f"-I{stage.at(stage.dir('includedir'))}/ipamclient" in flags.stdout, flags.stdout
    src = workdir / "prog.c"
    src.write_text(r"""
#include <stdio.h>
#include <stdlib.h>
#include <ipam/client.h>

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    ipam_client *c = ipam_client_open(argv[1]);
    char *err = NULL;
    int serving = 0, rc = ipam_client_health(c, "", &serving, &err);
    if (rc != 0 || serving != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING) {
        fprintf(stderr, "health: %d %s\n", rc, err ? err : "");
        return 1;
    }
    Ipam__V1__AllocateRequest req = IPAM__V1__ALLOCATE_REQUEST__INIT;
    req.pool = argv[2];
    req.owner = argv[3];
    ProtobufCMessage *resp = NULL;
    rc = ipam_client_invoke(c, IPAM_METHOD_ALLOCATE, &req.base, &resp, &err);
    if (rc != 0) {
        fprintf(stderr, "allocate: %s: %s\n", ipam_status_name(rc), err);
        return 1;
    }
    Ipam__V1__Lease *l = ((Ipam__V1__AllocateResponse *)resp)->lease;
    for (size_t i = 0; i < l->n_addresses; i++)
        printf("%s\n", l->addresses[i]);
    protobuf_c_message_free_unpacked(resp, NULL);
    ipam_client_close(c);
    return 0;
}
""")
    san = ["-fsanitize=address,undefined"] if sanitized() else []
    prog = workdir / "prog"
    r = subprocess.run([cc, "-std=c11", "-Wall", "-Werror", *san, "-o", str(prog), str(src),
                        *shlex.split(flags.stdout)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"cc {flags.stdout}:\n{r.stderr}"

    pools = pools_of(stage.example.read_text())
    name = next(iter(pools))
    d = Ipamd(stage, workdir / "ipamd.sock", workdir / "data", config=stage.example)
    try:
        d.wait_serving()
        r = subprocess.run([prog, f"unix:{d.socket}", name, "libipamclient-test"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        addrs = r.stdout.split()
        assert addrs and all(any(ipaddress.ip_address(a) in n for n in pools[name]) for a in addrs)
        lease = json.loads(d.ctl("lease", "get", "libipamclient-test").stdout)
        assert lease["addresses"] == addrs
        d.stop()
    finally:
        d.kill()


# --- the README's backup --------------------------------------------------------------

def test_a_sqlite3_backup_of_a_live_ipamd_is_a_consistent_snapshot_that_restores(stage, workdir):
    sqlite3 = tool("sqlite3")
    pools = pools_of(stage.example.read_text())
    name = max(pools, key=lambda n: sum(x.num_addresses for x in pools[n]))
    d = Ipamd(stage, workdir / "ipamd.sock", workdir / "data", config=stage.example)
    acked, stop, failure = [], threading.Event(), []

    def writer():
        i = 0
        while not stop.is_set() and i < 1000:
            r = d.ctl("allocate", "--pool", name, "--owner", f"b/{i:04}")
            if r.returncode != 0:
                failure.append(r.stderr)
                return
            acked.append(f"b/{i:04}")
            i += 1

    backup = workdir / "backup.db"
    try:
        d.wait_serving()
        t = threading.Thread(target=writer)
        t.start()
        try:
            wait_until(lambda: len(acked) >= 10 or failure, 60, "10 allocations are acknowledged")
            before = len(acked)
            # The README's command, while allocations go on.
            r = subprocess.run([sqlite3, str(d.data_dir / "ipamd.db"), f".backup '{backup}'"],
                               capture_output=True, text=True, timeout=120)
            wait_until(lambda: len(acked) >= before + 5 or failure or not t.is_alive(), 60,
                       "more allocations are acknowledged after the backup")
        finally:
            stop.set()
            t.join()
        assert not failure, failure
        assert r.returncode == 0 and not r.stderr, r.stderr
        after = len(acked)
        d.stop()
    finally:
        stop.set()
        d.kill()
    check = subprocess.run([sqlite3, str(backup), "PRAGMA integrity_check;"], capture_output=True,
                           text=True, timeout=60)
    assert check.stdout.strip() == "ok", check.stdout + check.stderr

    # Restored: a data directory holding only the backup as ipamd.db.
    restored = workdir / "restored"
    restored.mkdir()
    shutil.copy(backup, restored / "ipamd.db")
    d2 = Ipamd(stage, workdir / "restored.sock", restored)
    try:
        d2.wait_serving()
        r = d2.ctl("lease", "list", "--owner-prefix", "b/")
        assert r.returncode == 0, r.stderr
        owners = sorted(json.loads(ln)["owner"] for ln in r.stdout.splitlines())
        # A snapshot: every lease acknowledged before the backup, then a run
        # of the next ones without a gap, none of those acknowledged after it.
        assert owners == [f"b/{i:04}" for i in range(len(owners))], owners
        assert before <= len(owners) < after, (before, len(owners), after)
        d2.stop()
    finally:
        d2.kill()
