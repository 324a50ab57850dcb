"""The Kubernetes manifests (deploy/kubernetes/) and the Dockerfile, checked against
the real binaries and the API requests the adapter really makes.

- Every YAML file parses; every object has apiVersion, kind and a name; the
  kustomizations reference files that exist, and the emptyDir overlay renders to
  exactly the plain emptydir/ipamd.yaml; the two variants differ only in the data
  volume.
- Every flag the containers and probes pass is in that binary's --help, and the
  values agree (one socket path everywhere, on a Memory emptyDir both containers
  mount; --data-dir on the data volume; metrics ports are the named container
  ports; every path on a volume, since the root filesystem is read-only).
- The manifests' Pod is run here: ipamd, its probes and k8s-adapter with the
  containers' own commands and environment (paths moved to temporary directories,
  0.0.0.0 to 127.0.0.1, in-cluster config replaced by --server), against the test
  API server (tests/k8s/fake_apiserver.py), through a scenario that makes every
  request the adapter can make. The RBAC rules bound to the ServiceAccount must
  allow every request of that run (namespaces and resourceNames as kube-apiserver
  computes them) and grant nothing that was not used: the set of (apiGroup,
  resource, verb) granted is the set used. A second run with --write-status shows
  what that flag adds. The scenario also replaces the Pod with an empty database
  (the emptyDir variant's case) and checks that no Service changes address.
- Security: non-root, read-only root, no privilege escalation, no capabilities,
  RuntimeDefault seccomp, requests and limits, ipamd's probes through ipamctl
  health, the API token only in the adapter's container, the image tag is the
  project version.
- Dockerfile: Debian 12 in both stages, exactly the build packages in the build
  stage (the toolchain and the packages of the pkg-config modules and programs the
  CMake files require, which scripts/deps must list too), a runtime package for
  every shared library the built binaries
  load (ldd, then dpkg -S, less what debian:12-slim already has) and no -dev
  package or compiler in the runtime stage, the binaries copied to the paths the
  manifests run, and the manifests' user.

Binaries: $IPAMD, $K8S_ADAPTER, $IPAMCTL (defaults under build/). Everything
started here listens on 127.0.0.1 or on Unix sockets in temporary directories and
is stopped at the end of its test.
"""

import copy
import fnmatch
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections import namedtuple
from pathlib import Path
from urllib.parse import parse_qs, unquote

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (REPO / "tests" / "adapter", REPO / "tests" / "k8s"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import harness  # noqa: E402
from harness import (ANN_IPS, SERVICE_CIDRS, carries_lease, ips_of,  # noqa: E402
                     service_manifest, wait_for)
from fake_apiserver import FakeApiServer  # noqa: E402

DEPLOY = REPO / "deploy" / "kubernetes"
BASE = DEPLOY / "base" / "ipamd.yaml"
EMPTYDIR = DEPLOY / "emptydir" / "ipamd.yaml"
EXAMPLE_CM = DEPLOY / "kubevip-configmap.yaml"
VARIANTS = {"volume-claim": BASE, "emptydir": EMPTYDIR}
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

ENV_VARS = {"ipamd": "IPAMD", "k8s-adapter": "K8S_ADAPTER", "ipamctl": "IPAMCTL"}
_DEFAULTS = {"ipamd": "ipamd/ipamd", "k8s-adapter": "k8s-adapter/k8s-adapter",
             "ipamctl": "clients/ipamctl"}
BINARIES = {n: Path(os.environ.get(ENV_VARS[n], REPO / "build" / _DEFAULTS[n])).absolute()
            for n in ENV_VARS}

DOC_NETS = [ipaddress.ip_network(n) for n in
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]

# What every C build needs besides the libraries: the compiler, cmake, pkg-config.
TOOLCHAIN = {"build-essential", "cmake", "pkg-config"}
COMPILERS = re.compile(r"^(build-essential|gcc|g\+\+|cpp|clang|cmake|make|ninja-build|"
                       r"pkg-config|pkgconf|binutils|protobuf-compiler|protobuf-c-compiler|"
                       r"(gcc|g\+\+|cpp|clang)-\d+)$")
# Sanitizer runtimes appear when the binaries were built with IPAM_SANITIZE; a
# release image never links them.
SANITIZER_RUNTIMES = re.compile(r"^lib(asan|ubsan|lsan|tsan|hwasan)\d+$")

STOP_TIMEOUT = 30.0


# ------------------------------------------------------------------------------------
# reading the manifests

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def key_of(obj):
    md = obj.get("metadata") or {}
    return (obj.get("kind"), md.get("namespace"), md.get("name"))


def objects(path):
    out = {}
    for d in load_docs(path):
        k = key_of(d)
        assert k not in out, f"{path}: {k} defined twice"
        out[k] = d
    return out


def the(objs, kind):
    found = [o for k, o in objs.items() if k[0] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objs):
    return the(objs, "StatefulSet")["spec"]["template"]["spec"]


def binary_of(argv0):
    name = Path(argv0).name
    assert name in BINARIES, f"command {argv0!r} is none of {sorted(BINARIES)}"
    return name


def container_argv(c):
    return list(c.get("command") or []) + list(c.get("args") or [])


def container_by_binary(spec, name):
    found = [c for c in spec["containers"] if binary_of(container_argv(c)[0]) == name]
    assert len(found) == 1, f"expected one container running {name}, found {len(found)}"
    return found[0]


def exec_probes(c):
    """[(kind, argv)] of the container's exec probes."""
    return [(kind, list(c[kind]["exec"]["command"]))
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
            if kind in c and "exec" in c[kind]]


def project_version():
    m = re.search(r"project\(\s*ipamd\s+VERSION\s+([0-9][0-9.]*)",
                  (REPO / "CMakeLists.txt").read_text())
    assert m, "no project(ipamd VERSION x.y.z) in CMakeLists.txt"
    return m.group(1)


# ------------------------------------------------------------------------------------
# kustomize, the part these manifests use

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "patches"}


def kustomization_file(d):
    for n in KUSTOMIZATION_NAMES:
        if (d / n).is_file():
            return d / n
    return None


def json_patch(doc, ops, where):
    """RFC 6902 add/remove/replace, enough for kustomize's JSON patches."""
    doc = copy.deepcopy(doc)
    for op in ops:
        toks = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        assert toks, f"{where}: patch path {op['path']!r}"
        parent = doc
        for t in toks[:-1]:
            parent = parent[int(t)] if isinstance(parent, list) else parent[t]
        last = toks[-1]
        kind = op["op"]
        if kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                assert last in parent, f"{where}: remove of missing {op['path']}"
                del parent[last]
        elif kind == "add":
            if isinstance(parent, list):
                if last == "-":
                    parent.append(copy.deepcopy(op["value"]))
                else:
                    parent.insert(int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "replace":
            if isinstance(parent, list):
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                assert last in parent, f"{where}: replace of missing {op['path']}"
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise AssertionError(f"{where}: op {kind!r} is not handled by this test")
    return doc


def patch_ops(kdir, p):
    if "path" in p:
        ops = yaml.safe_load((kdir / p["path"]).read_text())
    else:
        ops = yaml.safe_load(p["patch"])
    assert isinstance(ops, list) and all(isinstance(o, dict) and "op" in o and "path" in o
                                         for o in ops), \
        f"{kdir}: patch {p} is not a JSON patch (a list of ops)"
    return ops


def target_matches(t, obj):
    group, _, version = obj["apiVersion"].rpartition("/")
    md = obj.get("metadata") or {}
    return all(t.get(k) is None or t[k] == v for k, v in (
        ("group", group), ("version", version), ("kind", obj.get("kind")),
        ("name", md.get("name")), ("namespace", md.get("namespace"))))


def kustomize(kdir):
    """The objects `kubectl kustomize kdir` renders (for resources and JSON patches)."""
    kf = kustomization_file(kdir)
    assert kf, f"{kdir} has no kustomization file"
    k = yaml.safe_load(kf.read_text())
    extra = set(k) - KUSTOMIZATION_KEYS
    assert not extra, f"{kf}: {sorted(extra)} are not rendered by this test: extend kustomize()"
    out = {}
    for r in k.get("resources") or []:
        p = (kdir / r).resolve()
        part = kustomize(p) if p.is_dir() else objects(p)
        for key, o in part.items():
            assert key not in out, f"{kf}: {key} twice"
            out[key] = o
    for p in k.get("patches") or []:
        ops = patch_ops(kdir, p)
        hits = [key for key, o in out.items() if target_matches(p.get("target") or {}, o)]
        assert hits, f"{kf}: patch {p} matches no object"
        for key in hits:
            out[key] = json_patch(out[key], ops, f"{kf}: {p}")
    return out


# ------------------------------------------------------------------------------------
# the binaries' options

Help = namedtuple("Help", "text flags subcommands")


def read_help(name):
    b = BINARIES[name]
    assert b.is_file() and os.access(b, os.X_OK), f"{name} not found at {b} (set ${ENV_VARS[name]})"
    r = subprocess.run([str(b), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{b} --help exited {r.returncode}: {r.stderr}"
    text = r.stdout
    flags = {}
    # "--name VALUE" (one space, then a value placeholder) takes a value;
    # "--name" followed by two spaces, "]" or the end of the line does not.
    flag_re = r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?=[\s\]=]|$)( ([^\s\[\]-][^\s\]]*))?"
    for m in re.finditer(flag_re, text, re.M):
        flags[m.group(1)] = flags.get(m.group(1), False) or m.group(3) is not None
    subs = []
    in_subs = False
    for line in text.splitlines():
        if line.strip() == "subcommands:":
            in_subs = True
            continue
        if in_subs:
            if not line.strip():
                break
            m = re.match(r"^  ([a-z][a-z ]*?)(?: [A-Z\[-]|$)", line)
            if m:
                subs.append(m.group(1).split())
    return Help(text, flags, subs)


_helps = {}


def helps():
    if not _helps:
        for n in BINARIES:
            _helps[n] = read_help(n)
    return _helps


Parsed = namedtuple("Parsed", "opts positionals unknown")


def parse_argv(argv, help_):
    """argv without the program name -> [(flag, value)], positionals, unknown flags."""
    opts, pos, unknown = [], [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            pos += argv[i + 1:]
            break
        if a.startswith("-") and a != "-":
            name, eq, val = a.partition("=")
            if name not in help_.flags:
                unknown.append(name)
                # Guess: a following word is its value.
                if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    opts.append((name, argv[i + 1]))
                    i += 2
                    continue
                opts.append((name, val if eq else None))
            elif help_.flags[name]:
                if eq:
                    opts.append((name, val))
                else:
                    assert i + 1 < len(argv), f"{name} needs a value"
                    opts.append((name, argv[i + 1]))
                    i += 1
            else:
                assert not eq, f"{name} takes no value, given {a!r}"
                opts.append((name, None))
        else:
            pos.append(a)
        i += 1
    return Parsed(opts, pos, unknown)


def opt(parsed, name):
    vals = [v for n, v in parsed.opts if n == name]
    assert len(vals) <= 1, f"{name} given {len(vals)} times"
    return vals[0] if vals else None


def flag_help_line(help_, name):
    for line in help_.text.splitlines():
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line):
            return line
    return ""


# ------------------------------------------------------------------------------------
# 1. files


def all_yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") or
                  p.name == "Kustomization")


def test_every_manifest_parses_and_every_object_has_apiversion_kind_and_name():
    files = all_yaml_files()
    assert BASE in files and EMPTYDIR in files and EXAMPLE_CM in files, files
    patch_files = set()
    for f in files:
        if f.name in KUSTOMIZATION_NAMES:
            k = yaml.safe_load(f.read_text())
            assert k.get("kind") == "Kustomization", f
            for r in k.get("resources") or []:
                p = (f.parent / r)
                assert p.is_file() or (p.is_dir() and kustomization_file(p)), \
                    f"{f}: resource {r} is neither a file nor a kustomization directory"
            for p in k.get("patches") or []:
                if "path" in p:
                    assert (f.parent / p["path"]).is_file(), f"{f}: patch {p['path']} missing"
                    patch_files.add((f.parent / p["path"]).resolve())
                patch_ops(f.parent, p)
    for f in files:
        if f.name in KUSTOMIZATION_NAMES or f.resolve() in patch_files:
            continue
        docs = load_docs(f)
        assert docs, f"{f} holds no object"
        for d in docs:
            assert isinstance(d, dict), f"{f}: a document is not a mapping"
            assert d.get("apiVersion") and d.get("kind"), f"{f}: {d} lacks apiVersion/kind"
            assert (d.get("metadata") or {}).get("name"), f"{f}: a {d['kind']} has no name"
            ns = d["metadata"].get("namespace")
            if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                assert ns is None, f"{f}: {d['kind']} is cluster-scoped, has namespace {ns}"
            else:
                assert ns == "kube-system", \
                    f"{f}: {d['kind']} {d['metadata']['name']} is in {ns!r}, not kube-system"
    # The plain files are not mixed with kustomization files in one directory of
    # plain files: kubectl apply -f DIR would choke on the Kustomization.
    assert kustomization_file(DEPLOY) is None


def test_the_kustomizations_render_the_plain_files():
    assert kustomize(DEPLOY / "base") == objects(BASE)
    rendered = kustomize(DEPLOY / "emptydir")
    plain = objects(EMPTYDIR)
    assert rendered.keys() == plain.keys()
    for k in plain:
        assert rendered[k] == plain[k], \
            f"{EMPTYDIR} differs from kubectl kustomize deploy/kubernetes/emptydir in {k}"


def test_the_emptydir_variant_differs_from_the_volume_claim_one_only_in_the_data_volume():
    base, emp = objects(BASE), objects(EMPTYDIR)
    assert base.keys() == emp.keys()
    bs, es = the(base, "StatefulSet"), the(emp, "StatefulSet")
    vct = bs["spec"].get("volumeClaimTemplates") or []
    assert [v["metadata"]["name"] for v in vct] == ["data"]
    assert "data" not in [v["name"] for v in bs["spec"]["template"]["spec"]["volumes"]]
    assert "volumeClaimTemplates" not in es["spec"]
    data = [v for v in es["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert len(data) == 1 and set(data[0]) == {"name", "emptyDir"}, data
    bs, es = copy.deepcopy(bs), copy.deepcopy(es)
    del bs["spec"]["volumeClaimTemplates"]
    es["spec"]["template"]["spec"]["volumes"] = [
        v for v in es["spec"]["template"]["spec"]["volumes"] if v["name"] != "data"]
    assert bs == es
    for k in base:
        if k[0] != "StatefulSet":
            assert base[k] == emp[k], f"{k} differs between the variants"


# ------------------------------------------------------------------------------------
# 2. commands, flags and values


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_flag_the_pod_passes_is_in_the_binarys_help(variant):
    spec = pod_spec(objects(VARIANTS[variant]))
    h = helps()
    missing = []
    for c in spec.get("initContainers", []) + spec["containers"]:
        argv = container_argv(c)
        assert argv and argv[0].startswith("/"), \
            f"container {c['name']}: the command must be explicit and absolute: {argv}"
        name = binary_of(argv[0])
        p = parse_argv(argv[1:], h[name])
        missing += [f"container {c['name']}: {name} has no {u}" for u in p.unknown]
        assert not p.positionals, f"container {c['name']}: stray arguments {p.positionals}"
        for kind, pargv in exec_probes(c):
            pname = binary_of(pargv[0])
            pp = parse_argv(pargv[1:], h[pname])
            missing += [f"container {c['name']} {kind}: {pname} has no {u}" for u in pp.unknown]
            if pname == "ipamctl":
                assert pp.positionals in h["ipamctl"].subcommands, \
                    f"{kind}: ipamctl has no subcommand {pp.positionals}"
    assert not missing, "\n".join(missing)


def _metrics_ports(c):
    return {p["containerPort"]: p for p in c.get("ports", [])}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pods_flag_values_agree_with_each_other_and_with_the_volumes(variant):
    objs = objects(VARIANTS[variant])
    sts = the(objs, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    h = helps()
    ipamd = container_by_binary(spec, "ipamd")
    adapter = container_by_binary(spec, "k8s-adapter")
    pi = parse_argv(container_argv(ipamd)[1:], h["ipamd"])
    pa = parse_argv(container_argv(adapter)[1:], h["k8s-adapter"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {v["metadata"]["name"] for v in sts["spec"].get("volumeClaimTemplates", [])}

    def mounts(c):
        return {m["mountPath"]: m for m in c.get("volumeMounts", [])}

    def volume_at(c, path):
        """The volume mount holding path in container c (the longest match)."""
        best = None
        for mp, m in mounts(c).items():
            if path == mp or path.startswith(mp.rstrip("/") + "/"):
                if best is None or len(mp) > len(best["mountPath"]):
                    best = m
        return best

    # One socket: ipamd listens where the adapter, the probes and IPAMD_ADDR point.
    listens = [v for n, v in pi.opts if n == "--listen"]
    assert len(listens) == 1 and listens[0].startswith("unix:/"), \
        f"ipamd should listen on one Unix socket only: {listens}"
    sock = listens[0]
    assert opt(pa, "--ipamd") == sock
    probes = exec_probes(ipamd)
    assert {k for k, _ in probes} >= {"livenessProbe", "readinessProbe"}
    for kind, argv in probes:
        pp = parse_argv(argv[1:], h[binary_of(argv[0])])
        assert binary_of(argv[0]) == "ipamctl" and pp.positionals == ["health"], (kind, argv)
        assert opt(pp, "--server") == sock, (kind, argv)
    for c in spec["containers"]:
        for e in c.get("env", []):
            if e["name"] == "IPAMD_ADDR":
                assert e.get("value") == sock, f"{c['name']}: IPAMD_ADDR {e}"
    # Its directory is a Memory emptyDir both containers mount there.
    sock_dir = os.path.dirname(sock[len("unix:"):])
    mi, ma = volume_at(ipamd, sock[len("unix:"):]), volume_at(adapter, sock[len("unix:"):])
    assert mi and ma and mi["name"] == ma["name"] and mi["mountPath"] == ma["mountPath"] == \
        sock_dir, f"the socket directory {sock_dir} must be one volume mounted in both"
    assert not mi.get("readOnly") and not ma.get("readOnly")
    assert volumes[mi["name"]].get("emptyDir", {}).get("medium") == "Memory", \
        volumes[mi["name"]]
    # The database is on the data volume: a claim, or an emptyDir in the other variant.
    data_dir = opt(pi, "--data-dir")
    assert data_dir, "ipamd must be given --data-dir"
    m = volume_at(ipamd, data_dir)
    assert m and m["name"] == "data" and m["mountPath"] == data_dir and not m.get("readOnly"), \
        f"--data-dir {data_dir} is not the data volume's mount: {mounts(ipamd)}"
    if variant == "volume-claim":
        assert "data" in claims and "data" not in volumes
    else:
        assert "emptyDir" in volumes["data"] and "data" not in claims
    assert "data" not in [m["name"] for m in adapter.get("volumeMounts", [])], \
        "the adapter is stateless: it has no business with ipamd's database"
    # Every path a container is given is on one of its volumes (the root is read-only).
    for c, p in ((ipamd, pi), (adapter, pa)):
        for n, v in p.opts:
            if v is None:
                continue
            path = v[len("unix:"):] if v.startswith("unix:") else v
            if path.startswith("/"):
                assert volume_at(c, path), f"{c['name']}: {n} {v} is on the read-only root"
    # Metrics: reachable from the Pod network, on the named container port.
    for c, p, name in ((ipamd, pi, "ipamd"), (adapter, pa, "k8s-adapter")):
        ml = opt(p, "--metrics-listen")
        if ml is None:
            continue
        host, _, port = ml.rpartition(":")
        assert host in ("0.0.0.0", "[::]", ""), \
            f"{name}: --metrics-listen {ml} is not reachable by Prometheus from other Pods"
        ports = _metrics_ports(c)
        assert int(port) in ports and ports[int(port)].get("name"), \
            f"{name}: port {port} is not a named container port: {c.get('ports')}"
    for c, p, name in ((ipamd, pi, "ipamd"), (adapter, pa, "k8s-adapter")):
        fmt = opt(p, "--log-format")
        if fmt is not None:
            assert re.search(rf"\b{re.escape(fmt)}\b", flag_help_line(h[name], "--log-format")), \
                f"{name}: --log-format {fmt} is not offered by --help"
    # Port names are unique in the Pod and the headless Service points at them.
    names = [p["name"] for c in spec["containers"] for p in c.get("ports", [])]
    assert len(names) == len(set(names)), names
    for k, o in objs.items():
        if k[0] == "Service":
            assert o["spec"].get("type", "ClusterIP") != "LoadBalancer"
            assert o["spec"]["selector"].items() <= \
                sts["spec"]["template"]["metadata"]["labels"].items()
            for sp in o["spec"].get("ports", []):
                assert sp["targetPort"] in names, sp
            assert sts["spec"].get("serviceName") == k[2]
    # The adapter uses the ServiceAccount (in-cluster), which the RBAC test checks.
    for n in ("--server", "--kubeconfig", "--context"):
        assert opt(pa, n) is None, f"the adapter should use its ServiceAccount, not {n}"


def _build_dir():
    for p in BINARIES["ipamd"].resolve().parents:
        if (p / "CMakeCache.txt").is_file():
            return p
    pytest.fail(f"no CMake build directory above {BINARIES['ipamd']}")


def test_cmake_install_puts_the_binaries_where_the_manifests_and_the_dockerfile_run_them(
        tmp_path):
    """The image is built with the prefix /usr and staged under /out (DESTDIR):
    this build dir, staged the same way under its own prefix, must have each
    binary the manifests run at the same place relative to the prefix."""
    build = _build_dir()
    m = re.search(r"^CMAKE_INSTALL_PREFIX:\w+=(.*)$", (build / "CMakeCache.txt").read_text(),
                  re.M)
    assert m, "no CMAKE_INSTALL_PREFIX in CMakeCache.txt"
    prefix = m.group(1).rstrip("/") or "/"
    stage = tmp_path / "stage"
    r = subprocess.run(["cmake", "--install", str(build)], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, DESTDIR=str(stage)))
    assert r.returncode == 0, r.stdout + r.stderr
    root = stage / prefix.lstrip("/")
    spec = pod_spec(objects(BASE))
    used = set()
    for c in spec["containers"]:
        used.add(container_argv(c)[0])
        used.update(argv[0] for _, argv in exec_probes(c))
    copies = dockerfile_copies()
    for path in sorted(used):
        assert path.startswith("/usr/"), path
        installed = root / path[len("/usr/"):]
        assert installed.is_file() and os.access(installed, os.X_OK), \
            f"cmake --install puts no {Path(path).name} at <prefix>/{path[len('/usr/'):]}: " \
            f"{sorted(str(p.relative_to(stage)) for p in stage.rglob('*') if p.is_file())}"
        assert copies.get(path) == "/out" + path, \
            f"the Dockerfile does not copy /out{path} to {path}: {copies}"


# ------------------------------------------------------------------------------------
# 3. security and scheduling


def effective(pod_sc, c_sc, key):
    return c_sc[key] if key in c_sc else pod_sc.get(key)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_locked_down_and_bounded(variant):
    objs = objects(VARIANTS[variant])
    spec = pod_spec(objs)
    psc = spec.get("securityContext") or {}
    assert psc.get("fsGroup") == 10001, "the data volume must be writable for group 10001"
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(k), k
    for v in spec["volumes"]:
        assert "hostPath" not in v, v
    version = project_version()
    images = set()
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        n = c["name"]
        assert effective(psc, sc, "runAsNonRoot") is True, n
        assert effective(psc, sc, "runAsUser") == 10001, n
        assert effective(psc, sc, "runAsGroup") == 10001, n
        assert sc.get("readOnlyRootFilesystem") is True, n
        assert sc.get("allowPrivilegeEscalation") is False, n
        assert not sc.get("privileged"), n
        caps = sc.get("capabilities") or {}
        assert caps.get("drop") == ["ALL"] and not caps.get("add"), n
        assert (effective(psc, sc, "seccompProfile") or {}).get("type") == "RuntimeDefault", n
        res = c.get("resources") or {}
        assert {"cpu", "memory"} <= set(res.get("requests") or {}), f"{n}: requests {res}"
        assert "memory" in (res.get("limits") or {}), f"{n}: a memory limit {res}"
        images.add(c["image"])
    assert len(images) == 1, f"one image for every container: {images}"
    image = images.pop()
    repo, _, tag = image.rpartition(":")
    assert repo == "ghcr.io/ipamd/ipamd" and tag == version, \
        f"image {image}: the tag should be the project version {version}"
    ipamd = container_by_binary(spec, "ipamd")
    kinds = {k for k, argv in exec_probes(ipamd) if Path(argv[0]).name == "ipamctl" and
             argv[-1] == "health"}
    assert {"livenessProbe", "readinessProbe"} <= kinds, \
        f"ipamd's liveness and readiness go through ipamctl health: {exec_probes(ipamd)}"
    # API credentials: only where they are used.
    sa = the(objs, "ServiceAccount")
    assert spec["serviceAccountName"] == sa["metadata"]["name"] == "ipamd"
    assert spec.get("automountServiceAccountToken") is False
    token_vols = {v["name"] for v in spec["volumes"] if any(
        "serviceAccountToken" in s for s in (v.get("projected") or {}).get("sources", []))}
    assert token_vols, "the adapter needs a service account token"
    for c in spec["containers"]:
        has = any(m["name"] in token_vols for m in c.get("volumeMounts", []))
        wants = binary_of(container_argv(c)[0]) == "k8s-adapter"
        assert has == wants, f"{c['name']}: token mounted {has}"
        if has:
            m = [m for m in c["volumeMounts"] if m["name"] in token_vols][0]
            assert m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
            assert m.get("readOnly") is True


def test_the_pod_is_scheduled_like_kube_vip_cloud_provider():
    spec = pod_spec(objects(BASE))
    tol = {(t["key"], t.get("effect")) for t in spec["tolerations"]}
    assert tol == {("node-role.kubernetes.io/control-plane", "NoSchedule"),
                   ("node-role.kubernetes.io/master", "NoSchedule")}
    prefs = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    got = {(p["weight"], e["key"], e["operator"]) for p in prefs
           for e in p["preference"]["matchExpressions"]}
    assert got == {(10, "node-role.kubernetes.io/control-plane", "Exists"),
                   (10, "node-role.kubernetes.io/master", "Exists")}
    sts = the(objects(BASE), "StatefulSet")
    assert sts["spec"]["replicas"] == 1, "two adapters would both allocate"


def test_the_example_configmap_uses_kube_vip_keys_and_documentation_ranges_only():
    cm = the(objects(EXAMPLE_CM), "ConfigMap")
    env = adapter_env(pod_spec(objects(BASE)))
    assert cm["metadata"]["name"] == env.get("KUBEVIP_CONFIG_MAP", "kubevip")
    assert cm["metadata"]["namespace"] == env.get("KUBEVIP_NAMESPACE", "kube-system")
    families = set()
    for k, v in cm["data"].items():
        assert isinstance(v, str), f"{k}: ConfigMap values are strings"
        assert re.match(r"^(cidr|range|allow-share|interface)-[a-z0-9-]+$|^search-order$|"
                        r"^skip-end-ips-in-cidr$", k), f"{k} is not a kube-vip key"
        if k.startswith(("cidr-", "range-")):
            for e in v.split(","):
                e = e.strip()
                nets = [ipaddress.ip_network(e, strict=False)] if "/" in e else \
                    [ipaddress.ip_network(a.strip()) for a in e.split("-")]
                for n in nets:
                    families.add(n.version)
                    assert any(n.version == d.version and n.subnet_of(d) for d in DOC_NETS), \
                        f"{k}: {e} is not a documentation range"
    assert families == {4, 6}, "the example shows a dual-stack pool too"


# ------------------------------------------------------------------------------------
# 4. RBAC: what the adapter asks for, against what the manifests grant

Attr = namedtuple("Attr", "group resource verb namespace name")


def exact_name(field_selector):
    """kube-apiserver's RequestInfo: a list/watch with metadata.name=X is about X."""
    for term in re.split(r"(?<!\\),", field_selector or ""):
        m = re.match(r"^metadata\.name(==|=)(.+)$", term.strip())
        if m:
            return m.group(2).replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\")
    return None


def request_attributes(r):
    """(apiGroup, resource[/subresource], verb, namespace, name) of one logged request,
    as kube-apiserver's RequestInfo resolves them for RBAC."""
    q = parse_qs(r.query, keep_blank_values=True)
    path = r.path
    if path.startswith("/api/v1/"):
        group, rest = "", path[len("/api/v1/"):]
    elif path.startswith("/apis/"):
        parts = path[len("/apis/"):].split("/")
        group, rest = parts[0], "/".join(parts[2:])
    else:
        return Attr(None, path, r.method.lower(), None, None)  # a non-resource URL
    parts = [unquote(p) for p in rest.split("/")]
    watch = False
    if parts[0] == "watch":
        watch, parts = True, parts[1:]
    ns = None
    if parts[0] == "namespaces" and len(parts) >= 3:
        ns, parts = parts[1], parts[2:]
    res = parts[0]
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    if q.get("watch", [""])[0].lower() in ("1", "true", "t"):
        watch = True
    if name is None:
        verb = {"GET": "watch" if watch else "list", "POST": "create",
                "DELETE": "deletecollection"}[r.method]
        if verb in ("list", "watch"):
            name = exact_name(q.get("fieldSelector", [""])[0])
    else:
        verb = {"GET": "watch" if watch else "get", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}[r.method]
    return Attr(group, res + ("/" + sub if sub else ""), verb, ns, name)


Grant = namedtuple("Grant", "scope rule via")  # scope: None (cluster) or a namespace


def grants_of(objs, sa_ns, sa_name):
    roles = {}
    for (kind, ns, name), o in objs.items():
        if kind in ("Role", "ClusterRole"):
            roles[(kind, ns if kind == "Role" else None, name)] = o.get("rules") or []
    out = []
    for (kind, ns, name), o in objs.items():
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subj = [s for s in o.get("subjects") or [] if s.get("kind") == "ServiceAccount" and
                s.get("name") == sa_name and s.get("namespace", ns) == sa_ns]
        others = [s for s in o.get("subjects") or [] if s not in subj]
        assert not others, f"{kind} {name} also binds {others}"
        if not subj:
            continue
        ref = o["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        assert kind == "RoleBinding" or ref["kind"] == "ClusterRole", f"{kind} {name}: {ref}"
        rkey = (ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])
        assert rkey in roles, f"{kind} {name} refers to {rkey}, which is not defined"
        for rule in roles[rkey]:
            out.append(Grant(None if kind == "ClusterRoleBinding" else ns, rule,
                             f"{kind} {name} -> {ref['kind']} {ref['name']}"))
    return out


def rule_allows(g, a):
    r = g.rule
    if g.scope is not None and a.namespace != g.scope:
        return False
    if r.get("nonResourceURLs"):
        return False
    return (a.group in r.get("apiGroups", []) and a.resource in r.get("resources", []) and
            a.verb in r.get("verbs", []) and
            (not r.get("resourceNames") or a.name in r["resourceNames"]))


def adapter_env(spec):
    c = container_by_binary(spec, "k8s-adapter")
    env = {}
    for e in c.get("env", []):
        assert "value" in e, f"env {e['name']}: only plain values are run by this test"
        env[e["name"]] = e["value"]
    return env


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPod:
    """The StatefulSet's Pod, run here: each volume is a directory under a short
    temporary root, each container's command runs with its paths moved there,
    0.0.0.0:PORT becomes 127.0.0.1:<a free port>, and flags the binary does not
    know are left out (the flag test reports them)."""

    def __init__(self, sts, api_url):
        self.sts = sts
        self.spec = sts["spec"]["template"]["spec"]
        self.root = Path(tempfile.mkdtemp(prefix="ipd-"))
        names = [v["name"] for v in self.spec["volumes"]] + \
            [v["metadata"]["name"] for v in sts["spec"].get("volumeClaimTemplates", [])]
        self.dirs = {}
        for n in names:
            self.dirs[n] = self.root / n
            self.dirs[n].mkdir()
        self.api_url = api_url
        self.ports = {}  # containerPort -> local port
        self.procs = {}
        self.logs = {}
        self.runs = 0
        self.ipamd_c = container_by_binary(self.spec, "ipamd")
        self.adapter_c = container_by_binary(self.spec, "k8s-adapter")

    def host_path(self, c, path):
        best = None
        for m in c.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best[0]):
                    best = (mp, m["name"])
        if best is None:
            return path
        return str(self.dirs[best[1]]) + path[len(best[0]):]

    def translate_value(self, c, v):
        if v.startswith("unix:/"):
            return "unix:" + self.host_path(c, v[len("unix:"):])
        m = re.match(r"^(0\.0\.0\.0|\[::\]|):(\d+)$", v)
        if m:
            port = self.ports.setdefault(int(m.group(2)), free_port())
            return f"127.0.0.1:{port}"
        if v.startswith("/"):
            return self.host_path(c, v)
        return v

    def translate(self, c, argv):
        name = binary_of(argv[0])
        p = parse_argv(argv[1:], helps()[name])
        out = [str(BINARIES[name])]
        for n, v in p.opts:
            if n in p.unknown:
                continue
            out.append(n)
            if v is not None:
                out.append(self.translate_value(c, v))
        return out + p.positionals

    def env(self, c):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KUBEVIP_") and k not in ("KUBECONFIG", "IPAMD_ADDR")}
        for e in c.get("env", []):
            assert "value" in e, f"env {e['name']}: only plain values are run by this test"
            env[e["name"]] = self.translate_value(c, e["value"])
        return env

    def start(self, c, extra=()):
        self.runs += 1
        name = c["name"]
        log = self.root / f"{name}.{self.runs}.log"
        self.logs.setdefault(name, []).append(log)
        argv = self.translate(c, container_argv(c)) + list(extra)
        with open(log, "wb") as f:
            self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                                stderr=f, env=self.env(c), cwd=self.root)
        return argv

    def probe(self, c, kind):
        argv = [a for k, a in exec_probes(c) if k == kind][0]
        r = subprocess.run(self.translate(c, argv), capture_output=True, text=True,
                           env=self.env(c), timeout=30)
        return r.returncode == 0

    def start_ipamd(self):
        self.start(self.ipamd_c)
        wait_for(lambda: self.alive("ipamd") and self.probe(self.ipamd_c, "readinessProbe"),
                 "ipamd's readiness probe to pass")
        for kind, _ in exec_probes(self.ipamd_c):
            assert self.probe(self.ipamd_c, kind), f"ipamd's {kind} fails"

    def alive(self, name):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            raise AssertionError(f"{name} exited with {p.returncode if p else '?'}")
        return True

    def ipamctl(self, *args):
        sock = opt(parse_argv(container_argv(self.ipamd_c)[1:], helps()["ipamd"]), "--listen")
        return subprocess.run([str(BINARIES["ipamctl"]), "--server",
                               self.translate_value(self.ipamd_c, sock), *args],
                              capture_output=True, text=True, timeout=30)

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
        try:
            return p.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=STOP_TIMEOUT)
            return "killed"

    def log_text(self):
        parts = []
        for name, files in self.logs.items():
            for f in files:
                text = f.read_text(errors="replace") if f.exists() else ""
                parts.append(f"--- {name} ({f.name}) ---\n{text[-20000:]}")
        return "\n".join(parts)

    def cleanup(self):
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def pool_for(data, ns):
    for k in (f"cidr-{ns}", f"range-{ns}", "cidr-global", "range-global"):
        if k in data:
            return data[k]
    return None


def in_pool(addr, value):
    ip = ipaddress.ip_address(addr)
    for e in value.split(","):
        e = e.strip()
        if "/" in e:
            n = ipaddress.ip_network(e, strict=False)
            if ip.version == n.version and ip in n:
                return True
        else:
            lo, _, hi = e.partition("-")
            lo, hi = ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())
            if ip.version == lo.version and lo <= ip <= hi:
                return True
    return False


def first_v4(value):
    for e in value.split(","):
        e = e.strip()
        if "/" in e:
            n = ipaddress.ip_network(e, strict=False)
            if n.version == 4:
                return n.network_address
        elif ipaddress.ip_address(e.split("-")[0].strip()).version == 4:
            return ipaddress.ip_address(e.split("-")[0].strip())
    return None


def lease_addrs(pod, owner):
    r = pod.ipamctl("-o", "json", "lease", "get", owner)
    if r.returncode == 5:
        return None
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["addresses"]


def run_adapter_scenario(write_status):
    """Runs the Pod against the test API server through every kind of request the
    adapter makes; returns the API server's request log."""
    objs = objects(BASE)
    sts = the(objs, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    cm = copy.deepcopy(the(objects(EXAMPLE_CM), "ConfigMap"))
    data = cm["data"]
    pa = parse_argv(container_argv(container_by_binary(spec, "k8s-adapter"))[1:],
                    helps()["k8s-adapter"])
    prefix = opt(pa, "--owner-prefix") or "k8s"
    status_on = write_status or ("--write-status", None) in pa.opts

    srv = FakeApiServer(service_cidrs=SERVICE_CIDRS, history_limit=100000,
                        watch_queue_size=100000)
    srv.start()
    # In-cluster configuration becomes --server; a resync every second.
    extra = ["--server", srv.url, "--resync", "1"]
    if write_status and ("--write-status", None) not in pa.opts:
        extra.append("--write-status")
    pod = LocalPod(sts, srv.url)
    try:
        svc = lambda ns, n: srv.get("services", ns, n)  # noqa: E731

        def assigned(ns, n, count=None):
            def cond():
                o = svc(ns, n)
                if o is None or not carries_lease(o):
                    return None
                ips = ips_of(o)
                if count is not None and len(ips) != count:
                    return None
                if status_on:
                    ing = [i.get("ip") for i in
                           ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress", [])]
                    if sorted(ing) != sorted(ips):
                        return None
                return ips
            ips = wait_for(cond, f"Service {ns}/{n} to get an address")
            pool = pool_for(data, ns)
            assert pool and all(in_pool(a, pool) for a in ips), (ns, n, ips, pool)
            return ips

        # A Service carrying an address from before (kube-vip-cloud-provider's, say).
        srv.create("configmaps", cm)
        carried_ip = str(first_v4(pool_for(data, "team-a")) + 77)
        srv.create("services", service_manifest("carried", "team-a",
                                                annotations={ANN_IPS: carried_ip}))
        pod.start_ipamd()
        pod.start(pod.adapter_c, extra)
        assert assigned("team-a", "carried") == [carried_ip]
        assert srv.wait_for_watchers(2, timeout=harness.TIMEOUT)

        # New Services in several namespaces, single and dual stack.
        srv.create("services", service_manifest("web", "default"))
        srv.create("services", service_manifest("web", "team-a"))
        dual_ns = next((k.split("-", 1)[1] for k, v in data.items()
                        if k.startswith(("cidr-", "range-")) and k.split("-", 1)[1] != "global"
                        and {ipaddress.ip_address(e.strip().split("/")[0].split("-")[0]).version
                             for e in v.split(",")} == {4, 6}), None)
        assert dual_ns, "the example ConfigMap has no dual-stack pool for a namespace"
        srv.create("services", service_manifest("db", dual_ns, policy="RequireDualStack",
                                                families=["IPv4", "IPv6"]))
        assigned("default", "web")
        assigned("team-a", "web")
        dual = assigned(dual_ns, "db", count=2)
        assert {ipaddress.ip_address(a).version for a in dual} == {4, 6}

        # A patch that conflicts (409) is retried on the Service read afresh.
        for ns in ("default", "team-a"):
            path = f"/api/v1/namespaces/{ns}/services/conflict"
            srv.fail_next(1, code=409, method="PATCH", path_prefix=path, reason="Conflict",
                          message="the object has been modified; please apply your changes "
                                  "to the latest version and try again")
            srv.create("services", service_manifest("conflict", ns))
            assigned(ns, "conflict")
            assert srv.count_requests(method="GET", path=path) >= 1, \
                "the adapter did not re-read the Service after a 409"

        # Metrics answer where the manifests say.
        for c in (pod.ipamd_c, pod.adapter_c):
            for cport in _metrics_ports(c):
                local = pod.ports.get(cport)
                if local is None:
                    continue  # the binary does not have --metrics-listen yet

                def scrape(local=local):
                    with urllib.request.urlopen(f"http://127.0.0.1:{local}/metrics",
                                                timeout=5) as r:
                        return r.status == 200 and r.read()
                wait_for(scrape, f"{c['name']}'s metrics on port {cport}")

        # An expired watch (410) makes the adapter list again.
        lists = srv.count_requests(method="GET", path="/api/v1/services", watch=False)
        srv.hold_watches()
        srv.create("services", service_manifest("while-expired", "team-a"))
        srv.compact()
        srv.drop_watches()
        srv.release_watches()
        assigned("team-a", "while-expired")
        wait_for(lambda: srv.count_requests(method="GET", path="/api/v1/services",
                                            watch=False) > lists, "a relist after 410")

        # A periodic resync releases a lease whose Service never existed.
        ghost = f"{prefix}/default/ghost"
        r = pod.ipamctl("allocate", "--pool", "k8s.cidr-global", "--owner", ghost)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: lease_addrs(pod, ghost) is None, "the resync to release the orphan")

        # A deleted Service lets go of its finalizer and its lease.
        srv.delete("services", "team-a", "web")
        wait_for(lambda: svc("team-a", "web") is None, "the deleted Service to go")
        wait_for(lambda: lease_addrs(pod, f"{prefix}/team-a/web") is None, "its lease to go")

        # The Pod replaced with an empty database (the emptyDir variant's case;
        # the socket file of the killed ipamd is still there): every Service keeps
        # its address.
        before = {(o["metadata"]["namespace"], o["metadata"]["name"]): ips_of(o)
                  for o in srv.list("services") if o["spec"].get("type") == "LoadBalancer"}
        assert pod.stop("k8s-adapter", signal.SIGKILL) == -signal.SIGKILL
        assert pod.stop("ipamd", signal.SIGKILL) == -signal.SIGKILL
        for p in pod.dirs["data"].iterdir():
            p.unlink()
        pod.start_ipamd()
        pod.start(pod.adapter_c, extra)
        for (ns, n), ips in before.items():
            wait_for(lambda ns=ns, n=n, ips=ips: lease_addrs(pod, f"{prefix}/{ns}/{n}") == ips,
                     f"{ns}/{n}'s lease {ips} to be re-claimed")
        srv.create("services", service_manifest("after", "default"))
        new = assigned("default", "after")
        assert not any(set(new) & set(ips) for ips in before.values())
        after = {(o["metadata"]["namespace"], o["metadata"]["name"]): ips_of(o)
                 for o in srv.list("services") if o["spec"].get("type") == "LoadBalancer"}
        assert {k: after[k] for k in before} == before

        if not status_on:
            for o in srv.list("services"):
                assert not ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress"), \
                    "status written without --write-status"
        warnings = [(e["involvedObject"]["name"], e.get("message"))
                    for e in srv.events(type="Warning")]
        assert not warnings, warnings
        assert srv.events(reason="EnsuredLoadBalancer"), "no Events posted"

        assert pod.stop("k8s-adapter") == 0, "the adapter should exit 0 on SIGTERM"
        assert pod.stop("ipamd") == 0, "ipamd should exit 0 on SIGTERM"
        errs = srv.internal_errors()
        assert not errs, "\n".join(errs)
        return srv.request_log()
    except AssertionError as e:
        raise AssertionError(f"{e}\n\n{pod.log_text()}") from None
    finally:
        pod.cleanup()
        srv.stop()


_runs = {}


def adapter_requests(write_status):
    """The request log of the scenario, run once per module (a failure too)."""
    if write_status not in _runs:
        try:
            _runs[write_status] = run_adapter_scenario(write_status)
        except Exception as e:
            _runs[write_status] = e
            raise
    r = _runs[write_status]
    if isinstance(r, Exception):
        raise AssertionError(f"the scenario (--write-status {write_status}) failed earlier: "
                             f"{str(r)[:2000]}")
    return r


def used_attributes(log):
    attrs = [request_attributes(r) for r in log]
    nonres = [a for a in attrs if a.group is None]
    assert not nonres, f"the adapter requested non-resource URLs: {nonres}"
    return attrs


def triples(attrs):
    return {(a.group, a.resource, a.verb) for a in attrs}


def fmt(ts):
    return "\n".join(f"  ({g!r}, {r}, {v})" for g, r, v in sorted(ts))


def test_rbac_grants_exactly_the_requests_the_adapter_makes():
    objs = objects(BASE)
    sts = the(objs, "StatefulSet")
    sa_ns, sa_name = sts["metadata"]["namespace"], pod_spec(objs)["serviceAccountName"]
    assert ("ServiceAccount", sa_ns, sa_name) in objs
    grants = grants_of(objs, sa_ns, sa_name)
    used = used_attributes(adapter_requests(False))

    # Every request the adapter made is allowed.
    denied = sorted({a for a in used if not any(rule_allows(g, a) for g in grants)})
    assert not denied, "requests RBAC would refuse:\n" + "\n".join(map(str, denied))

    # Nothing is granted that was not used, nor more widely than used.
    granted = set()
    for g in grants:
        r = g.rule
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in (r.get(field) or []), f"{g.via}: '*' in {field}"
        assert not r.get("nonResourceURLs"), g
        for t in ((gr, res, v) for gr in r["apiGroups"] for res in r["resources"]
                  for v in r["verbs"]):
            granted.add(t)
            uses = [a for a in used if (a.group, a.resource, a.verb) == t and
                    (g.scope is None or a.namespace == g.scope)]
            assert uses, f"{g.via} grants {t}, which the adapter never used"
            if g.scope is None:
                spread = {a.namespace for a in uses}
                assert None in spread or len(spread) > 1, \
                    f"{g.via} grants {t} in every namespace; it is used only in {spread}: " \
                    "use a Role there"
            names = {(a.namespace, a.name) for a in uses}
            if r.get("resourceNames"):
                assert {n for _, n in names} == set(r["resourceNames"]), \
                    f"{g.via}: resourceNames {r['resourceNames']} for {t}, used {names}"
            else:
                assert len(names) > 1 or any(n is None for _, n in names), \
                    f"{g.via} grants {t} on any object; it is used only on {names}: " \
                    "add resourceNames"
    assert granted == triples(used), \
        f"granted:\n{fmt(granted)}\nused by the adapter:\n{fmt(triples(used))}"


def test_write_status_needs_only_the_services_status_patch_on_top():
    without = triples(used_attributes(adapter_requests(False)))
    with_ = triples(used_attributes(adapter_requests(True)))
    spec = pod_spec(objects(BASE))
    pa = parse_argv(container_argv(container_by_binary(spec, "k8s-adapter"))[1:],
                    helps()["k8s-adapter"])
    if ("--write-status", None) in pa.opts:
        assert with_ == without and ("", "services/status", "patch") in without
    else:
        assert with_ - without == {("", "services/status", "patch")}, \
            f"--write-status adds:\n{fmt(with_ - without)}\nand drops:\n{fmt(without - with_)}"
        assert without <= with_


def test_the_source_makes_no_kind_of_request_the_scenario_did_not():
    """A guard on the scenario: every HTTP method the adapter's code sends, and
    every watch it opens, was seen in the run."""
    src = "\n".join(p.read_text() for p in sorted((REPO / "k8s-adapter").glob("*.c")))
    methods = set(re.findall(r'kube_request\(\s*[^,]+,\s*"([A-Z]+)"', src))
    assert methods, "no kube_request call found: has the API client changed?"
    log = adapter_requests(False)
    seen = {r.method for r in log}
    assert methods <= seen, f"methods in the source never exercised: {methods - seen}"
    watches = len(re.findall(r"\bkube_watch_open\((?!\s*struct)", src))  # calls, not the definition
    watched = {(a.resource, a.namespace is None) for a in used_attributes(log)
               if a.verb == "watch"}
    assert len(watched) >= watches, f"{watches} watches in the source, seen {watched}"


# ------------------------------------------------------------------------------------
# 5. the Dockerfile

Stage = namedtuple("Stage", "image name instructions")


def dockerfile_stages():
    logical, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        logical.append(buf)
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    stages = []
    for line in logical:
        inst, _, rest = line.partition(" ")
        inst = inst.upper()
        if inst == "FROM":
            m = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest.strip(), re.I)
            assert m, line
            stages.append(Stage(m.group(1), m.group(2), []))
        else:
            assert stages, f"{line} before FROM"
            stages[-1].instructions.append((inst, rest.strip()))
    return stages


def apt_packages(stage):
    pkgs = set()
    for inst, rest in stage.instructions:
        if inst != "RUN":
            continue
        for seg in re.split(r"&&|;|\|\|", rest):
            toks = seg.split()
            words = [t for t in toks if "=" not in t or t.startswith("-")]
            if "install" in words and any(w in ("apt-get", "apt") for w in words):
                after = words[words.index("install") + 1:]
                pkgs |= {t.split("=")[0] for t in after if not t.startswith("-")}
    return pkgs


def dockerfile_copies():
    """{destination: source} of COPY --from=<build stage> in the last stage."""
    stages = dockerfile_stages()
    out = {}
    for inst, rest in stages[-1].instructions:
        if inst == "COPY" and "--from=" in rest:
            toks = [t for t in rest.split() if not t.startswith("--")]
            for src in toks[:-1]:
                out[toks[-1]] = src
    return out


def dpkg_owners(paths):
    """{path: package} for the files dpkg knows (trying the /lib and /usr/lib
    spellings, and the file a symlink points to)."""
    def variants(p):
        out = [p, os.path.realpath(p)]
        for q in list(out):
            if q.startswith("/lib"):
                out.append("/usr" + q)
            if q.startswith("/usr/lib"):
                out.append(q[len("/usr"):])
        return out

    allv = sorted({v for p in paths for v in variants(p)})
    r = subprocess.run(["dpkg", "-S"] + allv, capture_output=True, text=True, timeout=60)
    owner = {}
    for line in r.stdout.splitlines():
        if line.startswith("diversion"):
            continue
        pkgs, _, path = line.partition(": ")
        owner[path.strip()] = pkgs.split(", ")[0].split(":")[0]
    out = {}
    for p in paths:
        found = [owner[v] for v in variants(p) if v in owner]
        assert found, f"dpkg -S finds no package for {p}"
        out[p] = found[0]
    return out


def build_packages():
    """The Debian packages the build with BUILD_TESTING=OFF needs: the toolchain, and
    the package of every pkg-config module and program that the CMake files outside
    tests/ require."""
    modules, programs = set(), set()
    skip = ("OPTIONAL", "REQUIRED", "QUIET", "IMPORTED_TARGET", "GLOBAL", "NO_CMAKE_PATH",
            "NO_CMAKE_ENVIRONMENT_PATH")
    for d, dirs, files in os.walk(REPO):
        rel = Path(d).relative_to(REPO)
        if rel == Path("."):
            dirs[:] = [x for x in dirs if not x.startswith(("build", ".", "tests"))]
        if "CMakeLists.txt" not in files:
            continue
        text = re.sub(r"#.*", "", (Path(d) / "CMakeLists.txt").read_text())
        for m in re.finditer(r"pkg_check_modules\(\s*\w+([^)]*)\)", text):
            modules |= {re.split(r"[<>=]", t)[0] for t in m.group(1).split() if t not in skip}
        for m in re.finditer(r"find_program\(\s*\w+\s+(?:NAMES\s+)?([\w.+-]+)", text):
            programs.add(m.group(1))
    assert modules and programs, "no pkg_check_modules / find_program in the CMake files?"
    files = []
    for mod in sorted(modules):
        r = subprocess.run(["pkg-config", "--variable=pcfiledir", mod], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip(), f"pkg-config knows no {mod}"
        files.append(f"{r.stdout.strip()}/{mod}.pc")
    for prog in sorted(programs):
        w = shutil.which(prog)
        assert w, f"no {prog} on PATH"
        files.append(w)
    return TOOLCHAIN | set(dpkg_owners(files).values())


def deps_packages():
    text = (REPO / "scripts" / "deps").read_text()
    m = re.search(r"pkgs=\((.*?)\)", text, re.S)
    assert m, "no pkgs=(...) in scripts/deps"
    return set(m.group(1).split())


def dpkg_database():
    r = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\t${Priority}\t"
                        "${Essential}\t${Provides}\t${Pre-Depends}\t${Depends}\n"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    installed, provides, deps, base = set(), {}, {}, set()
    for line in r.stdout.splitlines():
        f = line.split("\t")
        if len(f) < 7 or f[1] != "installed":
            continue
        pkg = f[0]
        installed.add(pkg)
        for p in f[4].split(","):
            p = re.sub(r"\(.*?\)", "", p).strip()
            if p:
                provides.setdefault(p, set()).add(pkg)
        alts = []
        for d in (f[5] + "," + f[6]).split(","):
            choice = [re.sub(r"\(.*?\)|:\w+", "", a).strip() for a in d.split("|")]
            choice = [c for c in choice if c]
            if choice:
                alts.append(choice)
        deps[pkg] = alts
        if f[2] == "required" or f[3] == "yes":
            base.add(pkg)
    return installed, provides, deps, base


def closure(seeds, db):
    installed, provides, deps, _ = db
    seen, todo = set(), [s for s in seeds]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for alts in deps.get(p, []):
            for a in alts:
                for c in ({a} & installed) | provides.get(a, set()):
                    if c not in seen:
                        todo.append(c)
    return seen


def shared_library_packages():
    """{package: set of libraries} for every library ldd resolves for the three
    binaries, and the packages of their direct NEEDED entries."""
    paths, needed_paths = {}, set()
    for name, b in BINARIES.items():
        r = subprocess.run(["ldd", str(b)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"ldd {b}: {r.stderr}"
        resolved = {}
        for line in r.stdout.splitlines():
            s = line.strip()
            assert "not found" not in s, f"{name}: {s}"
            m = re.match(r"^(\S+)\s+=>\s+(/\S+)", s) or re.match(r"^((/\S+))\s+\(", s)
            if m:
                resolved[m.group(1)] = m.group(2)
                paths[m.group(2)] = f"{name}: {m.group(1)}"
        od = subprocess.run(["objdump", "-p", str(b)], capture_output=True, text=True,
                            timeout=30)
        assert od.returncode == 0, od.stderr
        for soname in re.findall(r"^\s*NEEDED\s+(\S+)", od.stdout, re.M):
            assert soname in resolved, f"{name}: NEEDED {soname} not in ldd's output"
            needed_paths.add(resolved[soname])

    pkg_of = dpkg_owners(sorted(paths))
    libs = {}
    for p, pk in pkg_of.items():
        libs.setdefault(pk, set()).add(paths[p])
    return libs, {pkg_of[p] for p in needed_paths}


def test_the_dockerfile_builds_on_debian_12_and_ships_only_runtime_packages():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    debian12 = re.compile(r"^(docker\.io/)?(library/)?debian:(12|bookworm)(-slim)?"
                          r"(-\d{8})?(@sha256:[0-9a-f]{64})?$")
    for s in stages:
        assert debian12.match(s.image), f"FROM {s.image} is not Debian 12"
    build, runtime = stages[0], stages[-1]
    assert re.match(r".*:(12|bookworm)-slim", runtime.image), runtime.image
    assert build.name, "the build stage is named (COPY --from uses it)"

    # The build stage: exactly the build packages (which scripts/deps lists too),
    # tests off, cmake --install.
    want = build_packages()
    assert want <= deps_packages(), f"scripts/deps lacks {sorted(want - deps_packages())}"
    have = apt_packages(build)
    assert have == want, f"the build stage lacks {sorted(want - have)}, " \
                         f"and installs {sorted(have - want)} the build does not need"
    runs = " ".join(r for i, r in build.instructions if i == "RUN")
    assert "-DBUILD_TESTING=OFF" in runs
    assert "-DCMAKE_INSTALL_PREFIX=/usr" in runs and \
        re.search(r"DESTDIR=/out cmake --install \S+", runs), \
        f"configure for /usr and stage under /out with DESTDIR: {runs}"

    # The runtime stage: no development package, no compiler ...
    rt = apt_packages(runtime)
    bad = sorted(p for p in rt if p.endswith("-dev") or COMPILERS.match(p))
    assert not bad, f"the runtime stage installs build packages: {bad}"
    for _, r in runtime.instructions:
        assert "--no-install-recommends" in r or "apt-get install" not in r
    # ... and a package for every shared library the binaries load.
    db = dpkg_database()
    base = closure(db[3], db)  # what debian:12-slim has: Essential and required, with deps
    libs, direct = shared_library_packages()
    # Binaries built with the sanitizers link other libraries (every transitive one
    # directly, the sanitizer runtimes) than the image's build, which has none:
    # their libraries say nothing about the image. The plain build checks them.
    if not any(SANITIZER_RUNTIMES.match(p) for p in libs):
        missing_direct = sorted(p for p in direct if p not in rt and p not in base)
        assert not missing_direct, \
            f"the binaries link these directly; install them in the runtime stage: " \
            f"{missing_direct}"
        got = closure(rt, db) | base
        missing = {p: sorted(v) for p, v in libs.items() if p not in got}
        assert not missing, f"libraries no installed package brings: {missing}"

    # The user the manifests run as, and the binaries where they run them.
    users = [r for i, r in runtime.instructions if i == "USER"]
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    spec = pod_spec(objects(BASE))
    psc = spec.get("securityContext") or {}
    for c in spec["containers"]:
        sc = c.get("securityContext") or {}
        assert (int(uid), int(gid or -1)) == (effective(psc, sc, "runAsUser"),
                                              effective(psc, sc, "runAsGroup")), \
            f"USER {users[-1]} is not {c['name']}'s runAsUser:runAsGroup"
    assert int(uid) != 0
    ep = [r for i, r in runtime.instructions if i == "ENTRYPOINT"]
    if ep:
        assert Path(yaml.safe_load(ep[-1])[0]).name == "ipamd", ep
    copies = dockerfile_copies()
    for name, dest in (("ipamd", "/usr/sbin/ipamd"), ("k8s-adapter", "/usr/bin/k8s-adapter"),
                       ("ipamctl", "/usr/bin/ipamctl")):
        assert dest in copies, f"the image has no {dest}: {copies}"


def test_the_docker_build_context_leaves_out_build_directories_and_git():
    lines = {ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")}
    assert lines & {"build*", "build*/", "/build*"}, lines
    assert lines & {".git", ".git/", "/.git"}, lines
    build_dirs = [p.name for p in REPO.iterdir() if p.is_dir() and p.name.startswith("build")]
    for d in build_dirs:
        assert any(fnmatch.fnmatch(d, ln.strip("/")) for ln in lines), d
