"""Test-side harness for the k8s-adapter scenarios: the test API server
(tests/k8s/fake_apiserver.py, in-process), a real ipamd (tests/integration/
ipam_client.py's Daemon) and real k8s-adapter processes, all on 127.0.0.1 and Unix
sockets under a per-test directory.

Synchronisation is only ever "wait for a condition, with a deadline": `wait_for`
re-evaluates a condition until it holds (or fails the test with what it last saw);
the API server's state is read directly (no HTTP), ipamd through gRPC, and the
adapter's log from its stderr file. Nothing sleeps for a fixed time.
"""

import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (REPO / "tests" / "integration", REPO / "tests" / "k8s"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import ipam_client  # noqa: E402
from ipam_client import Daemon  # noqa: E402
from fake_apiserver import ApiError, FakeApiServer  # noqa: E402,F401


# A wait that fails after this long means the adapter never got there. Generous:
# the suite also runs under AddressSanitizer on two cores.
TIMEOUT = float(os.environ.get("ADAPTER_TEST_TIMEOUT", "45"))
STOP_TIMEOUT = 30.0

CM_NS, CM_NAME = "kube-system", "kubevip"
ANN_IPS = "kube-vip.io/loadbalancerIPs"
ANN_IFACE = "kube-vip.io/serviceInterface"
FINALIZER = "service.kubernetes.io/load-balancer-cleanup"
CLASS = "kube-vip.io/kube-vip-class"
# The test cluster is dual-stack, so Services may ask for either family. These
# are cluster IPs (spec.clusterIPs), never load-balancer pools.
SERVICE_CIDRS = ("10.96.0.0/16", "fd00:10:96::/112")


def adapter_binary():
    return Path(os.environ.get("K8S_ADAPTER", REPO / "build" / "k8s-adapter" / "k8s-adapter"))


def ipamctl_binary():
    return Path(os.environ.get("IPAMCTL", REPO / "build" / "clients" / "ipamctl"))


# ------------------------------------------------------------------------------------
# metrics

METRICS_LINE = re.compile(r"metrics on http://(127\.0\.0\.1:\d+)/metrics")


def scrape(adapter):
    """The adapter's metrics (started with --metrics-listen), parsed with Debian's
    python3-prometheus-client: (name, frozenset of labels) -> value."""
    m = wait_for(lambda: METRICS_LINE.search(adapter.log()), "the adapter's metrics address")
    with urllib.request.urlopen(f"http://{m.group(1)}/metrics", timeout=10) as r:
        assert r.status == 200
        body = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


# ------------------------------------------------------------------------------------
# waiting

class _Unset:
    def __repr__(self):
        return "<never evaluated>"


def wait_for(cond, what, timeout=None, interval=0.02):
    """Re-evaluates cond() until it returns something truthy, which is returned.

    Fails with `what` and the last value seen after the deadline. Exceptions from
    cond (an AssertionError of a helper, say) count as "not yet" until the deadline,
    then propagate."""
    timeout = TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    last, last_exc = _Unset(), None
    delay = 0.002
    while True:
        try:
            last = cond()
            last_exc = None
            if last:
                return last
        except (AssertionError, grpc.RpcError, ApiError) as e:
            last_exc = e
        if time.monotonic() >= deadline:
            if last_exc is not None:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                                     f"{last_exc}") from last_exc
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"last seen: {last!r}")
        time.sleep(delay)  # polling cadence of a condition, not a synchronisation
        delay = min(interval, delay * 2)


# ------------------------------------------------------------------------------------
# Service objects

def service_manifest(name, namespace="default", ports=(("TCP", 80),), type="LoadBalancer",
                     lb_ip=None, annotations=None, labels=None, families=None, policy=None,
                     lb_class=None, finalizers=None):
    ports = list(ports)
    spec = {"type": type, "selector": {"app": name}}
    if ports:
        spec["ports"] = [{"name": f"{proto.lower()}-{port}", "protocol": proto, "port": port,
                          "targetPort": port} for proto, port in ports]
    if lb_ip is not None:
        spec["loadBalancerIP"] = lb_ip
    if families is not None:
        spec["ipFamilies"] = list(families)
    if policy is not None:
        spec["ipFamilyPolicy"] = policy
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    md = {"name": name, "namespace": namespace}
    if annotations:
        md["annotations"] = dict(annotations)
    if labels:
        md["labels"] = dict(labels)
    if finalizers:
        md["finalizers"] = list(finalizers)
    return {"apiVersion": "v1", "kind": "Service", "metadata": md, "spec": spec}


def annotations_of(obj):
    a = (obj or {}).get("metadata", {}).get("annotations")
    return a if isinstance(a, dict) else {}


def labels_of(obj):
    a = (obj or {}).get("metadata", {}).get("labels")
    return a if isinstance(a, dict) else {}


def finalizers_of(obj):
    f = (obj or {}).get("metadata", {}).get("finalizers")
    return f if isinstance(f, list) else []


def ips_of(obj):
    """The addresses in the annotation, in order ([] when absent)."""
    v = annotations_of(obj).get(ANN_IPS)
    return [s.strip() for s in v.split(",")] if isinstance(v, str) and v else []


def carries_lease(obj):
    """Annotation, spec.loadBalancerIP = first address, label and finalizer."""
    ips = ips_of(obj)
    return bool(ips) and obj["spec"].get("loadBalancerIP") == ips[0] and \
        labels_of(obj).get("implementation") == "kube-vip" and FINALIZER in finalizers_of(obj)


def is_v4(a):
    return ipaddress.ip_address(a).version == 4


def is_v6(a):
    return ipaddress.ip_address(a).version == 6


# ------------------------------------------------------------------------------------
# the adapter process

class Adapter:
    """One k8s-adapter process; its stderr goes to a file in workdir."""

    def __init__(self, binary, workdir, name, server_url, ipamd_target, env=None, resync=300,
                 extra_args=()):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.name = name
        self.server_url = server_url
        self.ipamd_target = ipamd_target
        self.env = dict(env or {})
        self.resync = resync
        self.extra_args = list(extra_args)
        self.proc = None
        self.starts = 0
        self.exit_codes = []

    def argv(self):
        return [str(self.binary), "--server", self.server_url, "--ipamd", self.ipamd_target,
                "--resync", str(self.resync)] + self.extra_args

    def stderr_path(self, n=None):
        return self.workdir / f"{self.name}.stderr.{self.starts if n is None else n}"

    def start(self):
        assert self.proc is None, f"{self.name} already running"
        self.starts += 1
        env = dict(os.environ)
        for k in ("KUBEVIP_CONFIG_MAP", "KUBEVIP_NAMESPACE", "KUBEVIP_ENABLE_LOADBALANCERCLASS",
                  "KUBEVIP_CUSTOM_LOADBALANCERCLASS_NAME", "KUBECONFIG"):
            env.pop(k, None)
        env.update(self.env)
        with open(self.stderr_path(), "wb") as err:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, cwd=self.workdir, env=env)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self, n=None):
        """stderr of run n (default: the current or last one)."""
        p = self.stderr_path(n)
        return p.read_text(errors="replace") if p.exists() else ""

    def all_logs(self):
        return "\n".join(f"--- {self.name} run {n} (exit {self._code(n)}) ---\n{self.log(n)}"
                         for n in range(1, self.starts + 1))

    def _code(self, n):
        if n - 1 < len(self.exit_codes):
            return self.exit_codes[n - 1]
        return "running" if self.running() else "?"

    def count(self, pattern, n=None):
        return len(re.findall(pattern, self.log(n)))

    def wait_log(self, pattern, count=1, timeout=None):
        """Waits until the current run's stderr matches pattern `count` times."""
        def cond():
            if self.proc is not None and self.proc.poll() is not None:
                raise _Exited(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return self.count(pattern) >= count
        try:
            return wait_for(cond, f"{self.name} to log /{pattern}/ x{count}", timeout)
        except _Exited as e:
            raise AssertionError(str(e)) from None

    def wait_synced(self, count=1, timeout=None):
        return self.wait_log(r" synchronised: ", count, timeout)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM; returns the exit code (killed after timeout: 'killed')."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
            code = "killed"
        self.exit_codes.append(code)
        return code

    def kill(self):
        """SIGKILL, no questions asked (the crash being simulated)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        self.exit_codes.append("SIGKILL")


class _Exited(Exception):
    pass


# ------------------------------------------------------------------------------------
# the whole setup

class Cluster:
    """A fake API server, an ipamd and any number of adapters, for one test."""

    def __init__(self, workdir, pb, server_opts=None):
        self.workdir = Path(workdir)
        self.pb = pb
        opts = {"service_cidrs": SERVICE_CIDRS, "history_limit": 100000,
                "watch_queue_size": 100000}
        opts.update(server_opts or {})
        self.srv = FakeApiServer(**opts)
        self.srv.start()
        self.adapters = []
        ipamd_dir = self.workdir / "ipamd"
        ipamd_dir.mkdir()
        self.ipamd = Daemon(ipam_client.ipamd_binary(), ipamd_dir, pb)
        try:
            self.ipamd.start()
        except BaseException:
            self.ipamd.cleanup()
            self.srv.stop()
            raise

    @property
    def ipam(self):
        return self.ipamd.client

    # ---- processes ------------------------------------------------------------------

    def adapter(self, env=None, resync=300, start=True, extra_args=()):
        a = Adapter(adapter_binary(), self.workdir, f"adapter{len(self.adapters) + 1}",
                    self.srv.url, self.ipamd.target, env=env, resync=resync,
                    extra_args=extra_args)
        self.adapters.append(a)
        if start:
            a.start()
        return a

    def logs(self):
        parts = [a.all_logs() for a in self.adapters]
        parts.append(self.ipamd.stderr_text())
        errs = self.srv.internal_errors() if self.srv is not None else []
        if errs:
            parts.append("--- fake API server internal errors ---\n" + "\n".join(errs))
        return "\n".join(parts)

    def teardown(self):
        """Stops everything; returns a list of problems (exit codes, fake-server bugs)."""
        problems = []
        for a in self.adapters:
            if a.proc is not None:
                code = a.stop()
                if code != 0:
                    problems.append(f"{a.name} exited with {code} on SIGTERM, expected 0")
        if self.ipamd.proc is not None:
            try:
                self.ipamd.stop()
            except AssertionError as e:
                problems.append(str(e).split("\n")[0])
        self.ipamd.cleanup()
        errs = self.srv.internal_errors()
        self.srv.stop()
        if errs:
            problems.append(f"the fake API server raised {len(errs)} internal error(s)")
        return problems

    # ---- the ConfigMap --------------------------------------------------------------

    def set_config(self, data, name=CM_NAME, namespace=CM_NS, seen_by=None):
        """Creates or replaces the ConfigMap. With seen_by (an Adapter), waits until
        that adapter has logged the change: Services and the ConfigMap come through
        separate watches, so a Service created right after a ConfigMap change may
        otherwise be handled under the old pools (and then keeps that address)."""
        if seen_by is not None:
            pattern = rf"ConfigMap {re.escape(namespace)}/{re.escape(name)} changed"
            before = seen_by.count(pattern)
            obj = self.set_config(data, name, namespace)
            seen_by.wait_log(pattern, before + 1)
            return obj
        cur = self.srv.get("configmaps", namespace, name)
        obj = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": namespace}, "data": dict(data)}
        if cur is None:
            return self.srv.create("configmaps", obj)
        obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return self.srv.update("configmaps", obj)

    # ---- Services -------------------------------------------------------------------

    def create(self, name, namespace="default", **kw):
        return self.srv.create("services", service_manifest(name, namespace, **kw))

    def svc(self, namespace, name):
        return self.srv.get("services", namespace, name)

    def patch(self, namespace, name, patch):
        return self.srv.patch("services", namespace, name, patch)

    def wait_assigned(self, namespace, name, timeout=None, count=None):
        """Waits until the Service carries a lease (annotation, spec, label, finalizer);
        returns its addresses. With count, also waits for that many addresses."""
        def cond():
            o = self.svc(namespace, name)
            if o is not None and carries_lease(o) and (count is None or
                                                       len(ips_of(o)) == count):
                return ips_of(o)
            return None
        try:
            return wait_for(cond, f"Service {namespace}/{name} to get an address", timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\nService now: {self.svc(namespace, name)}\n"
                                 f"its Events: {self.event_summary(namespace, name)}") from None

    def wait_svc(self, namespace, name, pred, what, timeout=None):
        def cond():
            o = self.svc(namespace, name)
            return o if pred(o) else None
        try:
            return wait_for(cond, f"Service {namespace}/{name}: {what}", timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\nService now: {self.svc(namespace, name)}\n"
                                 f"its Events: {self.event_summary(namespace, name)}") from None

    def barrier(self, namespace="barrier", name=None):
        """Creates a LoadBalancer Service and waits until it has an address: the adapter
        has then processed every change made before (its queue and watch are FIFO)."""
        self._barriers = getattr(self, "_barriers", 0) + 1
        name = name or f"barrier-{self._barriers}"
        self.create(name, namespace)
        return self.wait_assigned(namespace, name)

    # ---- Events ---------------------------------------------------------------------

    def events(self, namespace, name, reason=None, type=None):
        return self.srv.events(namespace=namespace, involved_name=name, reason=reason,
                               type=type)

    def event_summary(self, namespace, name):
        return [(e.get("type"), e.get("reason"), e.get("message"))
                for e in self.events(namespace, name)]

    def wait_event(self, namespace, name, reason, type=None, contains=(), timeout=None):
        """Waits for an Event on the Service with this reason (and type) whose message
        contains every string in `contains`; returns it."""
        if isinstance(contains, str):
            contains = (contains,)

        def cond():
            for e in self.events(namespace, name, reason=reason, type=type):
                if all(c in (e.get("message") or "") for c in contains):
                    return e
            return None
        try:
            return wait_for(cond, f"a {type or ''} {reason} Event on {namespace}/{name} "
                            f"containing {list(contains)}", timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}\nEvents: {self.event_summary(namespace, name)}") \
                from None

    def warnings(self, namespace, name):
        return [e.get("message") for e in self.events(namespace, name, type="Warning")]

    # ---- ipamd ----------------------------------------------------------------------

    def lease(self, owner):
        """The lease of owner, or None."""
        try:
            return self.ipam.GetLease(owner=owner).lease
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def leases(self, owner_prefix="k8s/"):
        leases, _ = self.ipam.all_leases(owner_prefix=owner_prefix)
        return leases

    def wait_no_lease(self, owner, timeout=None):
        return wait_for(lambda: self.lease(owner) is None, f"the lease of {owner} to go",
                        timeout)


class Creator(threading.Thread):
    """Creates LoadBalancer Services with these names in a background thread."""

    def __init__(self, cluster, names, namespace="default", **kw):
        super().__init__(daemon=True)
        self.cluster, self.namelist, self.namespace, self.kw = \
            cluster, list(names), namespace, kw
        self.created = 0
        self.error = None
        self.cond = threading.Condition()

    def names(self):
        return self.namelist

    def run(self):
        try:
            for name in self.names():
                self.cluster.create(name, self.namespace, **self.kw)
                with self.cond:
                    self.created += 1
                    self.cond.notify_all()
        except Exception as e:  # reported by finish()
            self.error = e
            with self.cond:
                self.cond.notify_all()

    def wait_created(self, k, timeout=None):
        with self.cond:
            ok = self.cond.wait_for(lambda: self.created >= k or self.error is not None,
                                    TIMEOUT if timeout is None else timeout)
        if self.error is not None:
            raise self.error
        assert ok, f"only {self.created} of {k} Services created"

    def finish(self, timeout=None):
        self.join(TIMEOUT if timeout is None else timeout)
        assert not self.is_alive(), "the Service creator did not finish"
        if self.error is not None:
            raise self.error
