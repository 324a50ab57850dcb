"""Observability: ipamd's Prometheus endpoint, its log formats, ipamctl stats.

The metrics are scraped over HTTP from a real ipamd and parsed with Debian's
python3-prometheus-client (its text-format parser, not ours), then compared
with what the API itself reports.
"""
import json
import queue
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

SC = grpc.StatusCode
METRICS_LINE = re.compile(r"metrics on http://(127\.0\.0\.1:\d+)/metrics")


def await_true(fn, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Scraper:
    def __init__(self, daemon):
        text = await_true(lambda: METRICS_LINE.search(daemon.stderr_path().read_text()),
                          "the metrics address in ipamd's log")
        self.base = f"http://{text.group(1)}"

    def raw(self, path="/metrics", method="GET"):
        req = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def families(self):
        status, headers, body = self.raw()
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
        return {f.name: f for f in text_string_to_metric_families(body)}

    def samples(self):
        """{(sample name, frozenset(labels)): value} of every sample."""
        out = {}
        for fam in self.families().values():
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def value(self, name, **labels):
        return self.samples().get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metered(ipamd_factory):
    d = ipamd_factory(extra_args=["--metrics-listen", "127.0.0.1:0"])
    return d, Scraper(d)


def handled(scr, method, code, service="ipam.v1.Ipam"):
    return scr.value("ipamd_grpc_server_handled_total", grpc_service=service,
                     grpc_method=method, grpc_code=code)


def test_pool_gauges_match_what_the_api_reports(metered):
    d, scr = metered
    c = d.client
    c.apply_pool("web", ["192.0.2.0/28", "2001:db8::/120"])
    c.apply_pool("db.internal-1_x", ["198.51.100.0/30"])
    for i in range(5):
        c.alloc("web", f"o{i}", family=c.pb.ipam.FAMILY_REQUIRE_DUAL_STACK)
    c.alloc("db.internal-1_x", "q")
    s = scr.samples()
    for name in ("web", "db.internal-1_x"):
        pool = c.get_pool(name)
        for fam, stats in (("ipv4", pool.ipv4), ("ipv6", pool.ipv6)):
            key = frozenset({"pool": name, "family": fam}.items())
            assert s[("ipamd_pool_addresses", key)] == int(stats.total or 0)
            assert s[("ipamd_pool_addresses_used", key)] == int(stats.used or 0)
            assert s[("ipamd_pool_addresses_free", key)] == int(stats.free or 0)
        assert s[("ipamd_pool_leases", frozenset({"pool": name}.items()))] == pool.leases
    assert s[("ipamd_leases", frozenset())] == 6
    assert s[("ipamd_revision", frozenset())] == c.revision()
    assert s[("ipamd_serving", frozenset())] == 1


def test_an_ipv6_pool_reports_its_exact_size(metered):
    d, scr = metered
    d.client.apply_pool("v6", ["2001:db8::/64"])
    status, _, body = scr.raw()
    # 2^64 does not fit a uint64: written exactly, it still parses as a float.
    assert 'ipamd_pool_addresses{pool="v6",family="ipv6"} 18446744073709551616\n' in body
    assert scr.value("ipamd_pool_addresses", pool="v6", family="ipv6") == 2.0 ** 64


def test_allocations_and_releases_are_counted_by_result_code(metered):
    d, scr = metered
    c = d.client
    c.apply_pool("small", ["192.0.2.0/30"])
    before = scr.samples()
    for i in range(4):
        c.alloc("small", f"o{i}")
    with pytest.raises(grpc.RpcError) as e:
        c.alloc("small", "one-too-many")
    assert e.value.code() == SC.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as e:
        c.alloc("no-such-pool", "x")
    assert e.value.code() == SC.NOT_FOUND
    c.Release(owner="o0")
    with pytest.raises(grpc.RpcError) as e:
        c.Release(owner="never-allocated")
    assert e.value.code() == SC.NOT_FOUND

    def delta(method, code):
        k = frozenset({"grpc_service": "ipam.v1.Ipam", "grpc_method": method,
                       "grpc_code": code}.items())
        return scr.samples().get(("ipamd_grpc_server_handled_total", k), 0) - \
            before.get(("ipamd_grpc_server_handled_total", k), 0)

    assert delta("Allocate", "OK") == 4
    assert delta("Allocate", "RESOURCE_EXHAUSTED") == 1
    assert delta("Allocate", "NOT_FOUND") == 1
    assert delta("Release", "OK") == 1
    assert delta("Release", "NOT_FOUND") == 1
    assert delta("Renew", "OK") == 0


def test_latency_histograms_count_every_call_and_are_cumulative(metered):
    d, scr = metered
    c = d.client
    c.apply_pool("p", ["192.0.2.0/24"])
    for i in range(20):
        c.alloc("p", f"o{i}")
    fams = scr.families()
    hist = fams["ipamd_grpc_server_handling_seconds"]
    assert hist.type == "histogram"
    buckets = [s for s in hist.samples if s.name.endswith("_bucket")
               and s.labels["grpc_method"] == "Allocate"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    assert buckets[-1].labels["le"] == "+Inf"
    count = next(s.value for s in hist.samples if s.name.endswith("_count")
                 and s.labels["grpc_method"] == "Allocate")
    total = next(s.value for s in hist.samples if s.name.endswith("_sum")
                 and s.labels["grpc_method"] == "Allocate")
    assert count == buckets[-1].value == 20
    assert 0 < total < 20 * 10
    ok = scr.value("ipamd_grpc_server_handled_total", grpc_service="ipam.v1.Ipam",
                   grpc_method="Allocate", grpc_code="OK")
    assert ok == count

    commits = fams["ipamd_store_commit_seconds"]
    n_commits = next(s.value for s in commits.samples if s.name.endswith("_count"))
    # One ApplyPool and 20 sequential Allocates: each its own transaction.
    assert n_commits >= 21
    batch = fams["ipamd_store_commit_batch_size"]
    batch_sum = next(s.value for s in batch.samples if s.name.endswith("_sum"))
    batch_count = next(s.value for s in batch.samples if s.name.endswith("_count"))
    assert batch_count == n_commits
    assert batch_sum == 21
    assert scr.value("ipamd_store_commit_failures_total") == 0


def test_concurrent_writes_share_commits(metered):
    d, scr = metered
    c = d.client
    c.apply_pool("p", ["192.0.2.0/24"])
    before = scr.value("ipamd_store_commit_batch_size_count")
    futures = [c.Allocate.future(pool="p", owner=f"o{i}") for i in range(64)]
    for f in futures:
        f.result()
    fams = scr.families()
    batch = fams["ipamd_store_commit_batch_size"]
    n = next(s.value for s in batch.samples if s.name.endswith("_count")) - before
    total = next(s.value for s in batch.samples if s.name.endswith("_sum"))
    assert total == 65
    assert 1 <= n <= 64


def test_watch_streams_are_a_gauge(metered):
    d, scr = metered
    c = d.client
    assert scr.value("ipamd_watch_streams", kind="watch") == 0
    w1 = c.Watch(from_revision=0)
    w2 = c.Watch(from_revision=0)
    h = c.health.Watch(service="")
    w1.header()
    w2.header()
    h.next()
    assert scr.value("ipamd_watch_streams", kind="watch") == 2
    assert scr.value("ipamd_watch_streams", kind="health") == 1
    w1.close()
    await_true(lambda: scr.value("ipamd_watch_streams", kind="watch") == 1,
               "one watch stream left")
    w2.close()
    h.close()
    await_true(lambda: scr.value("ipamd_watch_streams", kind="watch") == 0 and
               scr.value("ipamd_watch_streams", kind="health") == 0, "no streams left")
    # A server reflection stream (raw bytes: list_services, field 7, empty).
    requests = queue.Queue()
    refl = c.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=None, response_deserializer=None)(iter(requests.get, None),
                                                             timeout=30)
    requests.put(b"\x3a\x00")
    assert next(refl)  # answered: the stream is open
    assert scr.value("ipamd_watch_streams", kind="reflection") == 1
    requests.put(None)
    assert list(refl) == []
    await_true(lambda: scr.value("ipamd_watch_streams", kind="reflection") == 0,
               "the reflection stream gone")


def test_expired_leases_are_counted(metered):
    d, scr = metered
    c = d.client
    c.apply_pool("p", ["192.0.2.0/24"])
    c.alloc("p", "short", ttl_seconds=1)
    c.alloc("p", "long", ttl_seconds=3600)
    await_true(lambda: scr.value("ipamd_leases_expired_total") == 1, "the expiry counted",
               timeout=15)
    assert scr.value("ipamd_leases") == 1


def test_process_metrics_are_exported(metered):
    d, scr = metered
    fams = scr.families()
    rss = fams["process_resident_memory_bytes"].samples[0].value
    assert 1 << 20 < rss < 1 << 30
    fds = fams["process_open_fds"].samples[0].value
    assert fds >= 3
    start = fams["process_start_time_seconds"].samples[0].value
    assert abs(start - time.time()) < 600
    assert fams["ipamd_build_info"].samples[0].labels["version"]


def test_the_endpoint_serves_only_get_on_metrics(metered):
    _, scr = metered
    status, _, _ = scr.raw("/")
    assert status == 404
    status, _, _ = scr.raw("/metrics/extra")
    assert status == 404
    status, headers, _ = scr.raw("/metrics", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    status, _, body = scr.raw("/metrics", method="HEAD")
    assert status == 200 and body == ""


def test_metrics_listen_on_an_ipv6_address(ipamd_factory):
    d = ipamd_factory(extra_args=["--metrics-listen", "[::1]:0"])
    m = await_true(lambda: re.search(r"metrics on http://\[::1\]:(\d+)/metrics",
                                     d.stderr_path().read_text()),
                   "the metrics address in ipamd's log")
    with urllib.request.urlopen(f"http://[::1]:{m.group(1)}/metrics", timeout=10) as r:
        body = r.read().decode()
    assert "ipamd_serving 1" in body


def test_metrics_are_off_by_default(ipamd_factory):
    d = ipamd_factory()
    assert "metrics on" not in d.stderr_path().read_text()
    pid = d.proc.pid
    tcp = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    assert f"pid={pid}," not in tcp


@pytest.mark.parametrize("addr,message", [
    ("nonsense", "metrics address `nonsense' is not host:port"),
    ("127.0.0.1:99999", "port `99999' is not 0 to 65535"),
    ("127.0.0.1:", "port `' is not 0 to 65535"),
    ("no.such.host.invalid:9000", "metrics address `no.such.host.invalid:9000'"),
])
def test_a_bad_metrics_address_stops_ipamd_with_a_message(ipamd_factory, addr, message):
    d = ipamd_factory(extra_args=["--metrics-listen", addr], start=False)
    d.data_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert message in r.stderr


def test_a_metrics_port_in_use_stops_ipamd_with_a_message(ipamd_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = ipamd_factory(extra_args=["--metrics-listen", f"127.0.0.1:{port}"], start=False)
        d.data_dir.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(d.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"cannot serve metrics on `127.0.0.1:{port}': Address already in use" in r.stderr


# ---- logs -------------------------------------------------------------------

def test_json_logs_are_one_object_per_line(ipamd_factory):
    d = ipamd_factory(extra_args=["--log-format", "json", "--log-level", "debug"])
    c = d.client
    c.apply_pool("p", ["192.0.2.0/24"])
    with pytest.raises(grpc.RpcError):
        # A refusal is logged at debug level and quotes hostile text.
        c.alloc("p\"\n\\x", "o")
    d.stop()
    lines = d.stderr_path().read_text().splitlines()
    assert len(lines) >= 4
    for line in lines:
        obj = json.loads(line)
        assert set(obj) == {"time", "level", "msg"}, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["time"])
        assert obj["level"] in ("debug", "info", "warn", "error")
    msgs = [json.loads(line)["msg"] for line in lines]
    assert any(m.startswith("serving on unix:") for m in msgs)
    assert any("p\"\n\\x" in m for m in msgs), msgs
    assert msgs[-1].startswith("stopped at revision")


def test_text_logs_keep_hostile_text_on_one_line(ipamd_factory):
    d = ipamd_factory(extra_args=["--log-level", "debug"])
    with pytest.raises(grpc.RpcError):
        d.client.alloc("evil\nforged error line", "o")
    d.stop()
    lines = d.stderr_path().read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) ", l)
               for l in lines), lines
    assert any("evil\\nforged error line" in l for l in lines)


def test_no_log_line_per_successful_call_at_the_default_level(ipamd_factory):
    d = ipamd_factory()
    c = d.client
    c.apply_pool("p", ["192.0.2.0/24"])
    before = len(d.stderr_path().read_text().splitlines())
    for i in range(50):
        c.alloc("p", f"o{i}")
        c.GetLease(owner=f"o{i}")
    for i in range(50):
        c.Release(owner=f"o{i}")
    assert len(d.stderr_path().read_text().splitlines()) == before


@pytest.mark.parametrize("args,message", [
    (["--log-format", "xml"], "--log-format `xml' is not text or json"),
    (["--log-format"], "missing value"),
])
def test_a_bad_log_format_is_a_usage_error(ipamd_path, tmp_path, args, message):
    r = subprocess.run([str(ipamd_path), "--data-dir", str(tmp_path / "d")] + args,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr
    assert not (tmp_path / "d").exists()


# ---- ipamctl stats -----------------------------------------------------------

def ipamctl(path, target, *args):
    return subprocess.run([str(path), "--server", target, *args], capture_output=True,
                          text=True, timeout=30)


def test_ipamctl_stats_shows_each_pool_and_family(ipamd_factory, ipamctl_path):
    d = ipamd_factory()
    c = d.client
    c.apply_pool("web", ["192.0.2.0/26", "2001:db8::/64"])
    c.apply_pool("full", ["198.51.100.0/30"])
    c.apply_pool("dhcp", ["0.0.0.0/32"])
    for i in range(16):
        c.alloc("web", f"w{i}")
    for i in range(4):
        c.alloc("full", f"f{i}")
    c.alloc("dhcp", "d0")
    r = ipamctl(ipamctl_path, d.target, "stats")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["POOL", "FAMILY", "SIZE", "USED", "FREE", "USE"]
    by = {(row[0], row[1]): row[2:] for row in rows[1:]}
    assert by[("web", "ipv4")] == ["64", "16", "48", "25.0%", "[#####...............]"]
    assert by[("web", "ipv6")] == ["2^64", "0", "2^64", "0.0%", "[....................]"]
    assert by[("full", "ipv4")] == ["4", "4", "0", "100.0%", "[####################]"]
    assert by[("dhcp", "dhcp")] == ["-", "1", "-", "-"]
    # Columns line up: every row is as wide as the header up to the USE column.
    lines = r.stdout.splitlines()
    use_col = lines[0].rindex("USE") + len("USE")
    assert all(line[use_col - 1] in "%-" for line in lines[1:])


def test_ipamctl_stats_json_has_exact_counts(ipamd_factory, ipamctl_path):
    d = ipamd_factory()
    c = d.client
    c.apply_pool("v6", ["2001:db8::/64"])
    c.alloc("v6", "a")
    r = ipamctl(ipamctl_path, d.target, "-o", "json", "stats")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows == [{"pool": "v6", "family": "ipv6", "size": "18446744073709551616",
                     "used": "1", "free": "18446744073709551615",
                     "used_percent": pytest.approx(100 / 2 ** 64), "leases": 1}]


def test_ipamctl_stats_with_no_pools_prints_the_header(ipamd_factory, ipamctl_path):
    d = ipamd_factory()
    r = ipamctl(ipamctl_path, d.target, "stats")
    assert r.returncode == 0
    assert r.stdout.split() == ["POOL", "FAMILY", "SIZE", "USED", "FREE", "USE"]
