"""The adapter's metrics and logs, against the test API server.

Its API request counters are compared with the test API server's own request
log; the metrics are parsed with Debian's python3-prometheus-client.
"""
import json
from collections import Counter
from urllib.parse import parse_qs

from harness import scrape, wait_for


def by_name(samples, name):
    return {dict(labels).__repr__(): v for (n, labels), v in samples.items() if n == name}


def api_counts(samples, with_code=False):
    """(verb, resource[, code]) -> count, from k8s_adapter_api_requests_total."""
    c = Counter()
    for (n, labels), v in samples.items():
        if n != "k8s_adapter_api_requests_total":
            continue
        d = dict(labels)
        key = (d["verb"], d["resource"]) + ((d["code"],) if with_code else ())
        c[key] += int(v)
    return c


def classify(r):
    """The Kubernetes verb and resource of a logged request, as RBAC sees them."""
    segs = [s for s in r.path.split("/") if s]
    skip = 3 if segs[0] == "apis" else 2
    if len(segs) > skip + 2 and segs[skip] == "namespaces":
        skip += 2
    resource = segs[skip]
    named = len(segs) > skip + 1
    if len(segs) > skip + 2:
        resource += "/" + segs[skip + 2]
    watch = parse_qs(r.query).get("watch", [""])[0] in ("1", "true")
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
        r.method, "watch" if watch else "get" if named else "list")
    return verb, resource


def metered_adapter_with_services(cluster, names):
    """A synchronised adapter with metrics on, once every Service in names has
    its address and its EnsuredLoadBalancer Event."""
    cluster.set_config({"cidr-global": "192.0.2.0/24"})
    a = cluster.adapter(extra_args=["--metrics-listen", "127.0.0.1:0"])
    a.wait_synced()
    for n in names:
        cluster.create(n)
    for n in names:
        cluster.wait_assigned("default", n)
        cluster.wait_event("default", n, "EnsuredLoadBalancer")
    return a


def test_metrics_count_reconciles_api_requests_and_ipamd_calls(cluster):
    names = [f"svc{i}" for i in range(6)]
    a = metered_adapter_with_services(cluster, names)
    # One PATCH fails once with a 500: counted under its code, then retried.
    cluster.srv.fail_next(1, code=500, method="PATCH")
    cluster.create("late")
    cluster.wait_assigned("default", "late")
    cluster.wait_event("default", "late", "EnsuredLoadBalancer")

    def settled():
        s = scrape(a)
        if s.get(("k8s_adapter_queue_depth", frozenset()), -1) != 0:
            return None
        logged = Counter(classify(r) for r in cluster.srv.request_log())
        counted = api_counts(s)
        # Watches are counted when they end; every other request once answered.
        for key in set(logged) | set(counted):
            if key[0] != "watch" and logged[key] != counted[key]:
                return None
        return s

    s = wait_for(settled, "the adapter's request counters to match the server's log")
    codes = api_counts(s, with_code=True)
    assert codes[("patch", "services", "500")] == 1
    assert codes[("patch", "services", "200")] >= len(names) + 1
    assert codes[("create", "events", "201")] >= len(names) + 1
    assert codes[("list", "services", "200")] >= 1
    assert all(verb != "watch" or code != "none" for verb, _, code in codes), codes

    reconciles = {dict(l)["result"]: v for (n, l), v in s.items()
                  if n == "k8s_adapter_reconciles_total"}
    assert reconciles.get("done", 0) >= len(names) + 1
    assert reconciles.get("retry", 0) >= 1
    ipamd = {(dict(l)["method"], dict(l)["grpc_code"]): v for (n, l), v in s.items()
             if n == "k8s_adapter_ipamd_requests_total"}
    assert ipamd[("Allocate", "0")] >= len(names) + 1
    assert s[("k8s_adapter_queue_depth", frozenset())] == 0
    assert s[("process_open_fds", frozenset())] > 0


def test_json_logs_are_one_object_per_line(cluster):
    cluster.set_config({"cidr-global": "192.0.2.0/24"})
    a = cluster.adapter(extra_args=["--log-format", "json"])
    a.wait_log(r'"msg":"synchronised: ')
    cluster.create("web")
    cluster.wait_assigned("default", "web")
    # Hostile text from the API server stays inside one JSON string.
    cluster.create("bad", annotations={"kube-vip.io/loadbalancerIPs": "not-an-ip\n\"x"})
    cluster.wait_event("default", "bad", "SyncLoadBalancerFailed", "Warning")
    assert a.stop() == 0
    lines = a.log().splitlines()
    assert len(lines) >= 3
    for line in lines:
        obj = json.loads(line)
        assert set(obj) == {"time", "level", "msg"}, line
        assert obj["level"] in ("debug", "info", "warn", "error")
    assert json.loads(lines[0])["msg"].startswith("k8s-adapter ")


def test_the_watch_echo_of_the_adapters_own_patch_is_not_reconciled_again(cluster):
    names = [f"e{i}" for i in range(8)]
    a = metered_adapter_with_services(cluster, names)
    cluster.barrier()  # one more Service: every echo before it has been seen
    n = len(names) + 1
    done_key = ("k8s_adapter_reconciles_total", frozenset({"result": "done"}.items()))
    # The barrier's reconcile is counted just after its PATCH is visible.
    s = wait_for(lambda: (lambda m: m if m.get(done_key, 0) >= n else None)(scrape(a)),
                 "the barrier's reconcile to be counted")
    allocs = sum(v for (m, l), v in s.items() if m == "k8s_adapter_ipamd_requests_total"
                 and dict(l)["method"] == "Allocate")
    done = s[done_key]
    assert allocs == n, f"{allocs} Allocate calls for {n} Services"
    assert done == n, f"{done} reconciles for {n} Services"
    patches = api_counts(s, with_code=True)[("patch", "services", "200")]
    assert patches == n
