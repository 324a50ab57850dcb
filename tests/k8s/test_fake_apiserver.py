"""The fake API server behaves like kube-apiserver for the subset k8s-adapter uses.

Only http.client / raw sockets as clients. No sleeps for synchronisation: watch
streams are read with blocking socket reads (bounded by socket timeouts) and the
server offers Condition-based waits (wait_for_watchers, wait_until)."""

import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_apiserver import ApiError, FakeApiServer  # noqa: E402

NS = "default"
SVC = "/api/v1/namespaces/default/services"
CM = "/api/v1/namespaces/kube-system/configmaps"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# ---------------------------------------------------------------------------------------
# helpers

@pytest.fixture
def srv():
    s = FakeApiServer(bookmark_interval=0.2, too_large_rv_wait=0.1)
    s.start()
    yield s
    s.stop()
    assert s.internal_errors() == []


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.raw = status, headers, body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "Resp(%d, %r)" % (self.status, self.raw[:400])


def call(srv, method, path, body=None, ctype=None, token=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    h = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h["Content-Type"] = ctype or "application/json"
    if token is not None:
        h["Authorization"] = "Bearer " + token
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = Resp(r.status, r.headers, r.read())
    c.close()
    return out


def svc(name, type_="LoadBalancer", **meta):
    m = {"name": name}
    m.update(meta)
    return {"apiVersion": "v1", "kind": "Service", "metadata": m,
            "spec": {"type": type_, "ports": [{"name": "http", "port": 80}]}}


def create_svc(srv, name, **kw):
    r = call(srv, "POST", SVC, svc(name, **kw))
    assert r.status == 201, r
    return r.json


def assert_status(r, code, reason):
    assert r.status == code, r
    st = r.json
    assert st["kind"] == "Status" and st["apiVersion"] == "v1"
    assert st["metadata"] == {} or "continue" in st["metadata"]
    assert st["status"] == "Failure"
    assert st["code"] == code
    assert st.get("reason", "") == reason
    assert r.headers["Content-Type"] == "application/json"
    return st


class Watch:
    """A watch read off a raw socket so chunk framing is visible."""

    def __init__(self, srv, path, token=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
        auth = "Authorization: Bearer %s\r\n" % token if token else ""
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (path, auth))
                          .encode())
        self.f = self.sock.makefile("rb")
        status = self.f.readline().decode()
        self.status = int(status.split()[1])
        self.headers = {}
        while True:
            line = self.f.readline().decode()
            if line in ("\r\n", "\n", ""):
                break
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.buf = b""
        self.ended = False
        self.body = None
        if "content-length" in self.headers:
            self.body = json.loads(self.f.read(int(self.headers["content-length"])))

    def chunk(self):
        line = self.f.readline()
        if not line:
            raise EOFError("connection closed without the final chunk")
        size = int(line.strip(), 16)
        if size == 0:
            self.f.readline()
            self.ended = True
            return None
        data = self.f.read(size)
        if len(data) < size:
            raise EOFError("connection closed inside a chunk")
        self.f.readline()
        return data

    def event(self):
        """The next event, or None when the stream ended cleanly."""
        while b"\n" not in self.buf:
            c = self.chunk()
            if c is None:
                assert self.buf == b""
                return None
            self.buf += c
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def events(self, n):
        return [self.event() for _ in range(n)]

    def rest(self):
        out = []
        while True:
            e = self.event()
            if e is None:
                return out
            out.append(e)

    def close(self):
        try:
            self.f.close()
        finally:
            self.sock.close()


def next_non_bookmark(w):
    while True:
        e = w.event()
        if e is None or e["type"] != "BOOKMARK":
            return e


# ---------------------------------------------------------------------------------------
# basics

def test_health_version_and_discovery(srv):
    r = call(srv, "GET", "/healthz")
    assert r.status == 200 and r.raw == b"ok"
    assert call(srv, "GET", "/readyz").raw == b"ok"
    v = call(srv, "GET", "/version").json
    assert v["major"] == "1" and v["gitVersion"].startswith("v1.")
    assert call(srv, "GET", "/api").json["versions"] == ["v1"]
    res = {r["name"]: r for r in call(srv, "GET", "/api/v1").json["resources"]}
    assert {"services", "services/status", "configmaps", "events", "namespaces"} <= set(res)
    assert "watch" in res["services"]["verbs"] and res["services"]["namespaced"]


def test_create_fills_system_fields_and_defaults(srv):
    body = svc("web", labels={"app": "web"})
    body["spec"]["bogus"] = 1
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    r = call(srv, "POST", SVC, body)
    assert r.status == 201, r
    # an unknown field is dropped with a warning (fieldValidation=Warn, the default)
    assert r.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    o = r.json
    assert o["kind"] == "Service" and o["apiVersion"] == "v1"
    m = o["metadata"]
    assert uuid.UUID(m["uid"]).version == 4
    assert RFC3339.match(m["creationTimestamp"])
    assert m["resourceVersion"].isdigit()
    assert m["namespace"] == NS
    assert "generation" not in m            # Services carry no metadata.generation
    assert "bogus" not in o["spec"]
    assert o["status"] == {"loadBalancer": {}}      # status is cleared on create
    spec = o["spec"]
    assert spec["ports"] == [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80,
                              "nodePort": 30000}]
    assert spec["clusterIP"] == spec["clusterIPs"][0] and spec["clusterIP"].startswith("10.96.")
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["sessionAffinity"] == "None" and spec["externalTrafficPolicy"] == "Cluster"
    assert spec["allocateLoadBalancerNodePorts"] is True
    assert list(o) == ["kind", "apiVersion", "metadata", "spec", "status"]
    assert call(srv, "GET", SVC + "/web").json == o


def test_resource_version_is_global_and_bumped_on_every_write(srv):
    a = create_svc(srv, "a")
    b = call(srv, "POST", CM, {"metadata": {"name": "kubevip"}, "data": {"x": "1"}}).json
    c = call(srv, "PATCH", SVC + "/a", {"metadata": {"labels": {"x": "y"}}}, MERGE).json
    rvs = [int(x["metadata"]["resourceVersion"]) for x in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert srv.resource_version() == rvs[-1]


def test_generate_name(srv):
    body = svc("")
    body["metadata"] = {"generateName": "lb-"}
    o = call(srv, "POST", SVC, body).json
    assert re.match(r"^lb-[bcdfghjklmnpqrstvwxz2456789]{5}$", o["metadata"]["name"])


def test_keep_alive_connection_is_reused(srv):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    for _ in range(3):
        c.request("GET", "/api/v1/services")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["kind"] == "ServiceList"
    c.close()


# ---------------------------------------------------------------------------------------
# list

def test_list_all_namespaces_and_one_namespace(srv):
    create_svc(srv, "a")
    call(srv, "POST", "/api/v1/namespaces/other/services", svc("b"))
    all_ = call(srv, "GET", "/api/v1/services").json
    assert all_["kind"] == "ServiceList" and all_["apiVersion"] == "v1"
    assert all_["metadata"]["resourceVersion"] == str(srv.resource_version())
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in all_["items"]] == \
        [("default", "a"), ("other", "b")]
    assert all("kind" not in i and "apiVersion" not in i for i in all_["items"])
    one = call(srv, "GET", "/api/v1/namespaces/other/services").json
    assert [i["metadata"]["name"] for i in one["items"]] == ["b"]
    assert call(srv, "GET", "/api/v1/namespaces/empty/services").json["items"] == []


def test_list_label_selector(srv):
    create_svc(srv, "a", labels={"app": "x", "tier": "fe"})
    create_svc(srv, "b", labels={"app": "y"})
    create_svc(srv, "c")

    def names(sel):
        r = call(srv, "GET", "/api/v1/services?labelSelector=" + sel.replace(" ", "%20"))
        assert r.status == 200, r
        return [i["metadata"]["name"] for i in r.json["items"]]
    assert names("app=x") == ["a"]
    assert names("app==x") == ["a"]
    assert names("app!=x") == ["b", "c"]
    assert names("app in (x,y)") == ["a", "b"]
    assert names("app notin (x)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b", "c"]
    assert names("app=x,tier=fe") == ["a"]
    st = assert_status(call(srv, "GET", "/api/v1/services?labelSelector=app%20in%20x"),
                       400, "BadRequest")
    assert "unable to parse requirement" in st["message"]


def test_list_field_selector(srv):
    create_svc(srv, "a")
    create_svc(srv, "b")
    call(srv, "POST", "/api/v1/namespaces/other/services", svc("a"))

    def names(sel, path="/api/v1/services"):
        r = call(srv, "GET", path + "?fieldSelector=" + sel)
        assert r.status == 200, r
        return [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in r.json["items"]]
    assert names("metadata.name=a") == [("default", "a"), ("other", "a")]
    assert names("metadata.name=a,metadata.namespace=other") == [("other", "a")]
    assert names("metadata.name!=a") == [("default", "b")]
    assert names("metadata.name==b", SVC) == [("default", "b")]
    st = assert_status(call(srv, "GET", "/api/v1/services?fieldSelector=spec.type=X"),
                       400, "BadRequest")
    assert st["message"] == "field label not supported: spec.type"


def test_list_pagination_is_a_consistent_snapshot(srv):
    for n in "abcde":
        create_svc(srv, n)
    p1 = call(srv, "GET", "/api/v1/services?limit=2").json
    rv = p1["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in p1["items"]] == ["a", "b"]
    assert p1["metadata"]["remainingItemCount"] == 3
    tok = p1["metadata"]["continue"]
    # the token is what etcd3 storage encodes: {"v","rv","start"} in raw URL base64
    decoded = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
    assert decoded == {"v": "meta.k8s.io/v1", "rv": int(rv), "start": "default/b\u0000"}
    # changes after the first page do not show up in later pages
    call(srv, "DELETE", SVC + "/c")
    create_svc(srv, "bb")
    p2 = call(srv, "GET", "/api/v1/services?limit=2&continue=" + tok).json
    assert p2["metadata"]["resourceVersion"] == rv
    assert [i["metadata"]["name"] for i in p2["items"]] == ["c", "d"]
    p3 = call(srv, "GET", "/api/v1/services?limit=2&continue=" + p2["metadata"]["continue"]).json
    assert [i["metadata"]["name"] for i in p3["items"]] == ["e"]
    assert "continue" not in p3["metadata"] and "remainingItemCount" not in p3["metadata"]
    st = assert_status(call(srv, "GET", "/api/v1/services?continue=garbage!"), 400,
                       "BadRequest")
    assert st["message"].startswith("invalid continue token")
    assert_status(call(srv, "GET", "/api/v1/services?limit=1&resourceVersion=5&continue=" + tok),
                  400, "BadRequest")


def test_continue_token_expires_with_410_after_compaction(srv):
    for n in "abc":
        create_svc(srv, n)
    tok = call(srv, "GET", "/api/v1/services?limit=1").json["metadata"]["continue"]
    create_svc(srv, "d")
    srv.compact()
    r = call(srv, "GET", "/api/v1/services?limit=1&continue=" + tok)
    st = assert_status(r, 410, "Expired")
    assert st["message"].startswith("The provided continue parameter is too old to display a "
                                    "consistent list result.")
    # the Status carries an inconsistent continue token for the rest at the latest state
    rest = call(srv, "GET", "/api/v1/services?continue=" + st["metadata"]["continue"]).json
    assert [i["metadata"]["name"] for i in rest["items"]] == ["b", "c", "d"]


def test_list_resource_version_semantics(srv):
    create_svc(srv, "a")
    rv = srv.resource_version()
    create_svc(srv, "b")
    # a resourceVersion from the future: 504 "Too large resource version"
    st = assert_status(call(srv, "GET", "/api/v1/services?resourceVersion=%d" % (rv + 50)),
                       504, "Timeout")
    assert "Too large resource version: %d, current: %d" % (rv + 50, rv + 1) in st["message"]
    assert st["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
    # NotOlderThan (no limit): the latest state
    r = call(srv, "GET", "/api/v1/services?resourceVersion=%d" % rv).json
    assert len(r["items"]) == 2
    # Exact (limit set, or resourceVersionMatch=Exact): the state at rv
    r = call(srv, "GET", "/api/v1/services?resourceVersion=%d&limit=10" % rv).json
    assert [i["metadata"]["name"] for i in r["items"]] == ["a"]
    assert r["metadata"]["resourceVersion"] == str(rv)
    r = call(srv, "GET", "/api/v1/services?resourceVersion=%d&resourceVersionMatch=Exact"
             % rv).json
    assert [i["metadata"]["name"] for i in r["items"]] == ["a"]
    srv.compact()
    st = assert_status(call(srv, "GET", "/api/v1/services?resourceVersion=%d&limit=10" % rv),
                       410, "Expired")
    assert st["message"] == "The resourceVersion for the provided list is too old."
    st = assert_status(call(srv, "GET", "/api/v1/services?resourceVersionMatch=Exact"),
                       422, "Invalid")
    assert st["details"]["kind"] == "ListOptions"


# ---------------------------------------------------------------------------------------
# watch

def test_watch_stream_framing_and_initial_state(srv):
    create_svc(srv, "a")
    create_svc(srv, "b")
    for q in ("watch=1", "watch=true&resourceVersion=0"):
        w = Watch(srv, "/api/v1/services?" + q)
        assert w.status == 200
        assert w.headers["content-type"] == "application/json"
        assert w.headers["transfer-encoding"] == "chunked"
        evs = w.events(2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == \
            [("ADDED", "a"), ("ADDED", "b")]
        assert evs[0]["object"]["kind"] == "Service" and evs[0]["object"]["apiVersion"] == "v1"
        w.close()


def test_watch_from_resource_version_replays_changes_strictly_after_it(srv):
    create_svc(srv, "a")
    lst = call(srv, "GET", "/api/v1/services").json
    rv = lst["metadata"]["resourceVersion"]
    create_svc(srv, "b")
    call(srv, "PATCH", SVC + "/a", {"metadata": {"labels": {"k": "v"}}}, MERGE)
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=" + rv)
    evs = w.events(2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == \
        [("ADDED", "b"), ("MODIFIED", "a")]
    assert all(int(e["object"]["metadata"]["resourceVersion"]) > int(rv) for e in evs)
    call(srv, "DELETE", SVC + "/b")
    e = w.event()
    assert e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "b"
    # the DELETED object is the last state, stamped with the deletion's resourceVersion
    assert int(e["object"]["metadata"]["resourceVersion"]) == srv.resource_version()
    w.close()


def test_watch_too_old_resource_version_is_200_then_error_410(srv):
    s = FakeApiServer(history_limit=3)
    s.start()
    try:
        create_svc(s, "a")
        rv0 = s.resource_version()
        for i in range(5):
            call(s, "PATCH", SVC + "/a", {"metadata": {"labels": {"i": str(i)}}}, MERGE)
        w = Watch(s, "/api/v1/services?watch=1&resourceVersion=%d" % rv0)
        assert w.status == 200
        e = w.event()
        assert e == {"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: %d (%d)" % (rv0, s.resource_version() - 3),
            "reason": "Expired", "code": 410}}
        assert w.event() is None and w.ended
        w.close()
        # the newest 3 changes are still there
        w = Watch(s, "/api/v1/services?watch=1&resourceVersion=%d" % (s.resource_version() - 3))
        assert [e["object"]["metadata"]["labels"]["i"] for e in w.events(3)] == ["2", "3", "4"]
        w.close()
    finally:
        s.stop()


def test_each_resource_has_its_own_watch_window_and_lists_share_one(srv):
    """kube-apiserver's watch cache is per resource: churn in ConfigMaps does not
    expire a Services watch from before it. A list at an older resourceVersion reads
    etcd, whose compaction spans every resource."""
    s = FakeApiServer(history_limit=3)
    s.start()
    try:
        create_svc(s, "a")
        rv0 = s.resource_version()
        create_svc(s, "b")
        for i in range(5):
            assert call(s, "POST", CM, {"metadata": {"name": "c%d" % i}}).status == 201
        w = Watch(s, "/api/v1/services?watch=1&resourceVersion=%d" % rv0)
        e = w.event()
        assert e["type"] == "ADDED" and e["object"]["metadata"]["name"] == "b"
        w.close()
        w = Watch(s, "/api/v1/configmaps?watch=1&resourceVersion=%d" % rv0)
        e = w.event()
        assert e["type"] == "ERROR" and e["object"]["code"] == 410
        w.close()
        r = call(s, "GET", "/api/v1/services?resourceVersion=%d&resourceVersionMatch=Exact"
                 % rv0)
        assert_status(r, 410, "Expired")
    finally:
        s.stop()


def test_compact_makes_old_watches_expire(srv):
    create_svc(srv, "a")
    rv = srv.resource_version()
    create_svc(srv, "b")
    srv.compact()
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=%d" % rv)
    e = w.event()
    assert e["type"] == "ERROR" and e["object"]["code"] == 410
    assert e["object"]["reason"] == "Expired"
    w.close()
    # from the current resourceVersion it works
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=%d" % srv.resource_version())
    assert srv.wait_for_watchers(1)
    create_svc(srv, "c")
    assert w.event()["object"]["metadata"]["name"] == "c"
    w.close()


def test_watch_bookmarks(srv):
    create_svc(srv, "a")
    rv = srv.resource_version()
    w = Watch(srv, "/api/v1/services?watch=1&allowWatchBookmarks=true&resourceVersion=%d" % rv)
    assert srv.wait_for_watchers(1)
    create_svc(srv, "b")
    # A bookmark may come first (the interval is 0.2 s); the one after "b" must carry
    # its resourceVersion.
    assert next_non_bookmark(w)["type"] == "ADDED"
    e = w.event()
    assert e["type"] == "BOOKMARK"
    # an object of the watched kind carrying only resourceVersion (as the cacher sends it)
    assert e["object"] == {"kind": "Service", "apiVersion": "v1",
                           "metadata": {"resourceVersion": str(srv.resource_version()),
                                        "creationTimestamp": None},
                           "spec": {}, "status": {"loadBalancer": {}}}
    w.close()
    # without allowWatchBookmarks none come (the stream ends at timeoutSeconds)
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=%d&timeoutSeconds=1"
              % srv.resource_version())
    assert w.rest() == [] and w.ended
    w.close()


def test_watch_timeout_seconds_ends_the_stream_cleanly(srv):
    t0 = time.monotonic()
    w = Watch(srv, "/api/v1/services?watch=1&timeoutSeconds=1")
    assert w.event() is None and w.ended
    assert 0.9 <= time.monotonic() - t0 < 5
    w.close()


def test_watch_field_selector_one_configmap(srv):
    path = CM + "?watch=1&fieldSelector=metadata.name%3Dkubevip"
    w = Watch(srv, path)
    assert srv.wait_for_watchers(1)
    call(srv, "POST", CM, {"metadata": {"name": "other"}, "data": {"a": "1"}})
    call(srv, "POST", "/api/v1/namespaces/default/configmaps",
         {"metadata": {"name": "kubevip"}, "data": {"a": "1"}})
    call(srv, "POST", CM, {"metadata": {"name": "kubevip"}, "data": {"cidr-global": "10.0.0.0/24"}})
    call(srv, "PATCH", CM + "/kubevip", {"data": {"range-global": "10.0.1.1-10.0.1.9"}}, MERGE)
    e1, e2 = w.events(2)
    assert (e1["type"], e1["object"]["metadata"]["name"]) == ("ADDED", "kubevip")
    assert e1["object"]["metadata"]["namespace"] == "kube-system"
    assert e2["type"] == "MODIFIED" and e2["object"]["data"]["range-global"] == "10.0.1.1-10.0.1.9"
    w.close()


def test_watch_label_selector_transitions(srv):
    create_svc(srv, "a")
    w = Watch(srv, "/api/v1/services?watch=1&labelSelector=lb%%3Dyes&resourceVersion=%d"
              % srv.resource_version())
    assert srv.wait_for_watchers(1)
    call(srv, "PATCH", SVC + "/a", {"metadata": {"labels": {"lb": "yes"}}}, MERGE)
    call(srv, "PATCH", SVC + "/a", {"metadata": {"annotations": {"x": "1"}}}, MERGE)
    call(srv, "PATCH", SVC + "/a", {"metadata": {"labels": {"lb": None}}}, MERGE)
    evs = w.events(3)
    assert [e["type"] for e in evs] == ["ADDED", "MODIFIED", "DELETED"]
    # leaving the selection: DELETED with the previous content at the new resourceVersion
    assert evs[2]["object"]["metadata"]["labels"] == {"lb": "yes"}
    assert evs[2]["object"]["metadata"]["resourceVersion"] == str(srv.resource_version())
    w.close()


def test_watch_send_initial_events(srv):
    create_svc(srv, "a")
    w = Watch(srv, "/api/v1/services?watch=1&sendInitialEvents=true&allowWatchBookmarks=true"
              "&resourceVersionMatch=NotOlderThan")
    e1, e2 = w.events(2)
    assert e1["type"] == "ADDED"
    assert e2["type"] == "BOOKMARK"
    assert e2["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    w.close()
    w = Watch(srv, "/api/v1/services?watch=1&sendInitialEvents=true")
    assert w.status == 422 and w.body["reason"] == "Invalid"
    w.close()


def test_events_of_other_resources_and_namespaces_are_not_delivered(srv):
    w = Watch(srv, SVC + "?watch=1&resourceVersion=%d" % srv.resource_version())
    assert srv.wait_for_watchers(1)
    call(srv, "POST", "/api/v1/namespaces/other/services", svc("x"))
    call(srv, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}})
    create_svc(srv, "mine")
    assert w.event()["object"]["metadata"]["name"] == "mine"
    w.close()


# ---------------------------------------------------------------------------------------
# patch, put, conflicts

def test_merge_patch_semantics(srv):
    body = svc("a", labels={"keep": "1", "drop": "2"}, annotations={"a": "1"})
    body["spec"]["selector"] = {"app": "a", "tier": "x"}
    call(srv, "POST", SVC, body)
    r = call(srv, "PATCH", SVC + "/a", {
        "metadata": {"labels": {"drop": None, "new": "3"}, "annotations": None},
        "spec": {"selector": {"tier": None},
                 "ports": [{"name": "https", "port": 443}]}}, MERGE)
    assert r.status == 200, r
    o = r.json
    assert o["metadata"]["labels"] == {"keep": "1", "new": "3"}
    assert "annotations" not in o["metadata"]      # an emptied map is omitted
    assert o["spec"]["selector"] == {"app": "a"}
    # arrays are replaced, then defaulted (protocol, targetPort, a fresh nodePort by name)
    assert [(p["name"], p["port"], p["protocol"], p["targetPort"]) for p in o["spec"]["ports"]] \
        == [("https", 443, "TCP", 443)]
    # setting a key to null that does not exist is fine
    assert call(srv, "PATCH", SVC + "/a", {"metadata": {"labels": {"nope": None}}},
                MERGE).status == 200


def test_json_patch(srv):
    create_svc(srv, "a", annotations={"x": "1"})
    ops = [{"op": "test", "path": "/metadata/annotations/x", "value": "1"},
           {"op": "replace", "path": "/metadata/annotations/x", "value": "2"},
           {"op": "add", "path": "/metadata/annotations/kube-vip.io~1loadbalancerIPs",
            "value": "10.0.0.5"},
           {"op": "add", "path": "/metadata/finalizers",
            "value": ["service.kubernetes.io/load-balancer-cleanup"]},
           {"op": "add", "path": "/spec/ports/-", "value": {"name": "b", "port": 81}},
           {"op": "remove", "path": "/spec/ports/0"}]
    r = call(srv, "PATCH", SVC + "/a", ops, JSONP)
    assert r.status == 200, r
    o = r.json
    assert o["metadata"]["annotations"] == {"x": "2", "kube-vip.io/loadbalancerIPs": "10.0.0.5"}
    assert o["metadata"]["finalizers"] == ["service.kubernetes.io/load-balancer-cleanup"]
    assert [p["port"] for p in o["spec"]["ports"]] == [81]
    # a failed test op: 422 and nothing changes
    rv = o["metadata"]["resourceVersion"]
    st = assert_status(call(srv, "PATCH", SVC + "/a",
                            [{"op": "test", "path": "/metadata/annotations/x", "value": "9"},
                             {"op": "remove", "path": "/metadata/annotations"}], JSONP),
                       422, "Invalid")
    # the reason stays on the server: empty details, a generic message
    assert st["message"] == "the server rejected our request due to an error in our request"
    assert st["details"] == {}
    assert call(srv, "GET", SVC + "/a").json["metadata"]["resourceVersion"] == rv
    # add below a missing parent does not apply (RFC 6902)
    assert_status(call(srv, "PATCH", SVC + "/a",
                       [{"op": "add", "path": "/metadata/labels/x", "value": "1"}], JSONP),
                  422, "Invalid")
    # not a list: 400
    assert_status(call(srv, "PATCH", SVC + "/a", {"op": "add"}, JSONP), 400, "BadRequest")


def test_strategic_merge_patch(srv):
    body = svc("a")
    body["metadata"]["finalizers"] = ["a.io/x"]
    body["spec"]["ports"] = [{"name": "http", "port": 80}, {"name": "dns", "port": 53,
                                                            "protocol": "UDP"}]
    call(srv, "POST", SVC, body)
    r = call(srv, "PATCH", SVC + "/a", {
        "metadata": {"finalizers": ["b.io/y"]},
        "spec": {"ports": [{"port": 80, "name": "web"}, {"port": 8080, "name": "alt"},
                           {"port": 53, "$patch": "delete"}]}}, SMP)
    assert r.status == 200, r
    o = r.json
    # finalizers merge as a set; ports merge by their "port" key
    assert o["metadata"]["finalizers"] == ["a.io/x", "b.io/y"]
    assert [(p["name"], p["port"]) for p in o["spec"]["ports"]] == [("web", 80), ("alt", 8080)]
    r = call(srv, "PATCH", SVC + "/a", {"metadata": {"$deleteFromPrimitiveList/finalizers":
                                                     ["a.io/x"]}}, SMP)
    assert r.json["metadata"]["finalizers"] == ["b.io/y"]


def test_patch_content_types_and_bad_bodies(srv):
    create_svc(srv, "a")
    for ct in ("application/json", "text/plain", "application/apply-patch+yaml"):
        st = assert_status(call(srv, "PATCH", SVC + "/a", {"metadata": {}}, ct), 415,
                           "UnsupportedMediaType")
        assert st["message"].startswith("the body of the request was in an unknown format - "
                                        "accepted media types include: "
                                        "application/json-patch+json, "
                                        "application/merge-patch+json")
    # the content type is checked before the object is looked up
    assert_status(call(srv, "PATCH", SVC + "/missing", {}, "text/plain"), 415,
                  "UnsupportedMediaType")
    assert_status(call(srv, "PATCH", SVC + "/missing", {}, MERGE), 404, "NotFound")
    for bad in (b"{not json", b"", b"[1]"):
        st = assert_status(call(srv, "PATCH", SVC + "/a", bad, MERGE), 400, "BadRequest")
        assert "error decoding patch" in st["message"]
    assert_status(call(srv, "PATCH", SVC + "/a", b"null", MERGE), 400, "BadRequest")
    # a patch giving a field the wrong type: 422 on the "patch" field
    st = assert_status(call(srv, "PATCH", SVC + "/a", {"spec": {"ports": [{"port": "80"}]}},
                            MERGE), 422, "Invalid")
    assert st["details"]["causes"][0]["field"] == "patch"
    assert "cannot unmarshal string into Go struct field ServicePort.spec.ports.port of type " \
           "int32" in st["message"]
    # changing the name through a patch
    assert_status(call(srv, "PATCH", SVC + "/a", {"metadata": {"name": "b"}}, MERGE), 400,
                  "BadRequest")


def test_stale_resource_version_is_409(srv):
    o = create_svc(srv, "a")
    rv = o["metadata"]["resourceVersion"]
    ok = call(srv, "PATCH", SVC + "/a", {"metadata": {"resourceVersion": rv,
                                                      "labels": {"x": "1"}}}, MERGE)
    assert ok.status == 200
    st = assert_status(call(srv, "PATCH", SVC + "/a", {"metadata": {"resourceVersion": rv,
                                                                    "labels": {"x": "2"}}},
                            MERGE), 409, "Conflict")
    assert st["message"] == ('Operation cannot be fulfilled on services "a": the object has '
                             'been modified; please apply your changes to the latest version '
                             'and try again')
    assert st["details"] == {"name": "a", "kind": "services"}
    # PUT with the stale object
    o["metadata"]["labels"] = {"x": "3"}
    assert_status(call(srv, "PUT", SVC + "/a", o), 409, "Conflict")
    # JSON patch with a test on resourceVersion is the other way to be conditional
    assert_status(call(srv, "PATCH", SVC + "/a", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/labels/y", "value": "1"}], JSONP), 422, "Invalid")


def test_put_semantics(srv):
    o = create_svc(srv, "a")
    # with the current resourceVersion
    o["metadata"]["labels"] = {"v": "1"}
    r = call(srv, "PUT", SVC + "/a", o)
    assert r.status == 200 and r.json["metadata"]["labels"] == {"v": "1"}
    # without one: services (and configmaps, events) allow unconditional updates
    o = r.json
    del o["metadata"]["resourceVersion"]
    o["metadata"]["labels"] = {"v": "2"}
    r = call(srv, "PUT", SVC + "/a", o)
    assert r.status == 200 and r.json["metadata"]["labels"] == {"v": "2"}
    # PUT may leave out what the server allocated (clusterIP, nodePort by port name)
    slim = svc("a")
    r2 = call(srv, "PUT", SVC + "/a", slim)
    assert r2.status == 200, r2
    assert r2.json["spec"]["clusterIP"] == r.json["spec"]["clusterIP"]
    assert r2.json["spec"]["ports"][0]["nodePort"] == r.json["spec"]["ports"][0]["nodePort"]
    # the name in the body must match the URL
    st = assert_status(call(srv, "PUT", SVC + "/a", svc("b")), 400, "BadRequest")
    assert st["message"] == "the name of the object (b) does not match the name on the URL (a)"
    # a different uid is a failed precondition
    bad = dict(r2.json)
    bad["metadata"] = dict(bad["metadata"], uid=str(uuid.uuid4()))
    st = assert_status(call(srv, "PUT", SVC + "/a", bad), 409, "Conflict")
    assert "Precondition failed: UID in precondition" in st["message"]
    # create-on-update: yes for services, no for configmaps
    assert call(srv, "PUT", SVC + "/new", svc("new")).status == 201
    assert_status(call(srv, "PUT", CM + "/none", {"metadata": {"name": "none"}}), 404,
                  "NotFound")


def test_no_op_write_keeps_resource_version_and_sends_no_event(srv):
    o = create_svc(srv, "a", labels={"x": "1"})
    rv = o["metadata"]["resourceVersion"]
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=" + rv)
    assert srv.wait_for_watchers(1)
    r = call(srv, "PATCH", SVC + "/a", {"metadata": {"labels": {"x": "1"}}}, MERGE)
    assert r.status == 200 and r.json["metadata"]["resourceVersion"] == rv
    assert srv.resource_version() == int(rv)
    create_svc(srv, "marker")
    assert w.event()["object"]["metadata"]["name"] == "marker"
    w.close()


def test_concurrent_read_modify_write_with_conflict_retries(srv):
    create_svc(srv, "a", annotations={"n": "0"})
    conflicts = []

    def worker():
        for _ in range(15):
            while True:
                cur = call(srv, "GET", SVC + "/a").json
                n = int(cur["metadata"]["annotations"]["n"])
                r = call(srv, "PATCH", SVC + "/a", {"metadata": {
                    "resourceVersion": cur["metadata"]["resourceVersion"],
                    "annotations": {"n": str(n + 1)}}}, MERGE)
                if r.status == 200:
                    break
                assert r.status == 409, r
                conflicts.append(1)
    ts = [threading.Thread(target=worker) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert call(srv, "GET", SVC + "/a").json["metadata"]["annotations"]["n"] == "90"


# ---------------------------------------------------------------------------------------
# status subresource, service specifics

def test_status_subresource(srv):
    create_svc(srv, "a")
    # on the main resource, status changes are ignored
    r = call(srv, "PATCH", SVC + "/a", {"status": {"loadBalancer": {"ingress": [
        {"ip": "10.0.0.1"}]}}, "metadata": {"labels": {"x": "1"}}}, MERGE)
    assert r.status == 200 and r.json["status"] == {"loadBalancer": {}}
    # on /status only status changes (spec changes are ignored)
    r = call(srv, "PATCH", SVC + "/a/status", {"status": {"loadBalancer": {"ingress": [
        {"ip": "10.0.0.1"}]}}, "spec": {"type": "ClusterIP"}}, MERGE)
    assert r.status == 200, r
    # LoadBalancerIPMode defaulting (on by default from 1.30)
    assert r.json["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1", "ipMode": "VIP"}]
    assert r.json["spec"]["type"] == "LoadBalancer"
    r2 = call(srv, "PATCH", SVC + "/a/status", {"status": {"loadBalancer": {"ingress": [
        {"ip": "10.0.0.1", "ipMode": "Proxy"}]}}}, MERGE)
    assert r2.json["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1", "ipMode": "Proxy"}]
    r = call(srv, "PATCH", SVC + "/a/status", {"status": {"loadBalancer": {"ingress": [
        {"ip": "10.0.0.1"}]}}}, MERGE)
    assert call(srv, "GET", SVC + "/a/status").json["status"] == r.json["status"]
    # PUT on /status
    o = r.json
    o["status"]["loadBalancer"]["ingress"][0]["ip"] = "10.0.0.2"
    r = call(srv, "PUT", SVC + "/a/status", o)
    assert r.status == 200 and r.json["status"]["loadBalancer"]["ingress"][0]["ip"] == "10.0.0.2"
    # the status is validated
    assert_status(call(srv, "PATCH", SVC + "/a/status", {"status": {"loadBalancer": {
        "ingress": [{"ip": "not-an-ip"}]}}}, MERGE), 422, "Invalid")
    # other verbs, other resources
    assert_status(call(srv, "DELETE", SVC + "/a/status"), 405, "MethodNotAllowed")
    assert_status(call(srv, "GET", CM + "/x/status"), 404, "NotFound")
    assert_status(call(srv, "PATCH", SVC + "/missing/status", {}, MERGE), 404, "NotFound")


def test_type_change_away_from_load_balancer_drops_type_dependent_fields(srv):
    create_svc(srv, "a")
    call(srv, "PATCH", SVC + "/a/status", {"status": {"loadBalancer": {"ingress": [
        {"ip": "10.0.0.1"}]}}}, MERGE)
    r = call(srv, "PATCH", SVC + "/a", {"spec": {"type": "ClusterIP"}}, MERGE)
    assert r.status == 200, r
    spec = r.json["spec"]
    assert "nodePort" not in spec["ports"][0]
    assert "allocateLoadBalancerNodePorts" not in spec
    assert "externalTrafficPolicy" not in spec
    assert r.json["status"] == {"loadBalancer": {}}
    # and back: node ports are allocated again
    r = call(srv, "PATCH", SVC + "/a", {"spec": {"type": "LoadBalancer"}}, MERGE)
    assert r.json["spec"]["ports"][0]["nodePort"] >= 30000


def test_load_balancer_class_rules(srv):
    body = svc("a")
    body["spec"]["loadBalancerClass"] = "kube-vip.io/kube-vip-class"
    assert call(srv, "POST", SVC, body).status == 201
    st = assert_status(call(srv, "PATCH", SVC + "/a", {"spec": {"loadBalancerClass": "x.io/y"}},
                            MERGE), 422, "Invalid")
    assert st["details"]["causes"][0]["field"] == "spec.loadBalancerClass"
    assert "may not change once set" in st["message"]
    body = svc("b", type_="ClusterIP")
    body["spec"]["loadBalancerClass"] = "x.io/y"
    assert_status(call(srv, "POST", SVC, body), 422, "Invalid")


def test_load_balancer_ip_is_not_validated_by_the_server(srv):
    # the real server only warns about spec.loadBalancerIP; garbage is stored as is
    body = svc("a")
    body["spec"]["loadBalancerIP"] = "not-an-address"
    r = call(srv, "POST", SVC, body)
    assert r.status == 201 and r.json["spec"]["loadBalancerIP"] == "not-an-address"


def test_dual_stack_cluster_families():
    s = FakeApiServer(service_cidrs=("10.96.0.0/16", "fd00:10:96::/112"))
    s.start()
    try:
        body = svc("a")
        body["spec"]["ipFamilyPolicy"] = "PreferDualStack"
        o = call(s, "POST", SVC, body).json
        assert o["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
        assert [":" in ip for ip in o["spec"]["clusterIPs"]] == [False, True]
        body = svc("b")
        body["spec"]["ipFamilies"] = ["IPv6"]
        assert call(s, "POST", SVC, body).json["spec"]["clusterIP"].startswith("fd00:10:96::")
    finally:
        s.stop()
    r = None
    s = FakeApiServer()
    s.start()
    try:
        body = svc("a")
        body["spec"]["ipFamilyPolicy"] = "RequireDualStack"
        r = call(s, "POST", SVC, body)
    finally:
        s.stop()
    assert_status(r, 422, "Invalid")


# ---------------------------------------------------------------------------------------
# deletion and finalizers

def test_finalizer_deletion_flow(srv):
    fin = "service.kubernetes.io/load-balancer-cleanup"
    create_svc(srv, "a", finalizers=[fin])
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=%d" % srv.resource_version())
    assert srv.wait_for_watchers(1)
    r = call(srv, "DELETE", SVC + "/a")
    assert r.status == 200
    o = r.json
    assert o["kind"] == "Service"
    assert RFC3339.match(o["metadata"]["deletionTimestamp"])
    assert o["metadata"]["deletionGracePeriodSeconds"] == 0
    e = w.event()
    assert e["type"] == "MODIFIED" and e["object"]["metadata"]["deletionTimestamp"]
    # deleting again changes nothing
    r2 = call(srv, "DELETE", SVC + "/a")
    assert r2.status == 200 and r2.json["metadata"]["resourceVersion"] == \
        o["metadata"]["resourceVersion"]
    # the object is still there; no new finalizer may be added
    assert call(srv, "GET", SVC + "/a").status == 200
    st = assert_status(call(srv, "PATCH", SVC + "/a", {"metadata": {"finalizers": [fin, "x.io/y"]}},
                            MERGE), 422, "Invalid")
    assert st["message"] == ('Service "a" is invalid: metadata.finalizers: Forbidden: no new '
                             'finalizers can be added if the object is being deleted, found '
                             'new finalizers []string{"x.io/y"}')
    assert st["details"]["causes"] == [{"reason": "FieldValueForbidden", "message":
                                        st["message"].split(": ", 2)[2],
                                        "field": "metadata.finalizers"}]
    # other writes still work while it waits
    r = call(srv, "PATCH", SVC + "/a", {"metadata": {"labels": {"x": "1"}}}, MERGE)
    assert r.status == 200 and r.json["metadata"]["deletionTimestamp"] == \
        o["metadata"]["deletionTimestamp"]
    assert w.event()["type"] == "MODIFIED"
    # removing the last finalizer deletes it
    r = call(srv, "PATCH", SVC + "/a", {"metadata": {"finalizers": None}}, MERGE)
    assert r.status == 200
    e = w.event()
    assert e["type"] == "DELETED"
    # the DELETED event carries the last stored state (still with the finalizer)
    assert e["object"]["metadata"]["finalizers"] == [fin]
    assert_status(call(srv, "GET", SVC + "/a"), 404, "NotFound")
    w.close()


def test_delete_without_finalizers(srv):
    create_svc(srv, "a")
    call(srv, "POST", CM, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=%d" % srv.resource_version())
    assert srv.wait_for_watchers(1)
    r = call(srv, "DELETE", SVC + "/a")
    assert r.status == 200 and r.json["kind"] == "Service"      # services return the object
    e = w.event()
    assert e["type"] == "DELETED" and e["object"]["metadata"]["name"] == "a"
    w.close()
    uid = call(srv, "GET", CM + "/c").json["metadata"]["uid"]
    r = call(srv, "DELETE", CM + "/c")
    assert r.json == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success", "details": {"name": "c", "kind": "configmaps",
                                                       "uid": uid}}
    assert_status(call(srv, "DELETE", CM + "/c"), 404, "NotFound")


def test_delete_preconditions(srv):
    o = create_svc(srv, "a")
    st = assert_status(call(srv, "DELETE", SVC + "/a", {"preconditions": {
        "resourceVersion": "1"}}), 409, "Conflict")
    assert "the ResourceVersion in the precondition (1) does not match" in st["message"]
    st = assert_status(call(srv, "DELETE", SVC + "/a", {"preconditions": {
        "uid": "nope"}}), 409, "Conflict")
    assert "The object might have been deleted and then recreated" in st["message"]
    assert call(srv, "DELETE", SVC + "/a", {"preconditions": {
        "uid": o["metadata"]["uid"], "resourceVersion": o["metadata"]["resourceVersion"]}}
    ).status == 200


def test_create_while_an_object_of_that_name_is_being_deleted(srv):
    create_svc(srv, "a", finalizers=["x.io/y"])
    call(srv, "DELETE", SVC + "/a")
    st = assert_status(call(srv, "POST", SVC, svc("a")), 409, "AlreadyExists")
    assert st["message"] == 'object is being deleted: services "a" already exists'


# ---------------------------------------------------------------------------------------
# errors

def test_errors_are_status_objects(srv):
    st = assert_status(call(srv, "GET", SVC + "/x"), 404, "NotFound")
    assert st["message"] == 'services "x" not found'
    assert st["details"] == {"name": "x", "kind": "services"}
    create_svc(srv, "x")
    st = assert_status(call(srv, "POST", SVC, svc("x")), 409, "AlreadyExists")
    assert st["message"] == 'services "x" already exists'
    assert st["details"] == {"name": "x", "kind": "services"}
    # unknown paths and verbs
    st = assert_status(call(srv, "GET", "/api/v1/namespaces/default/widgets"), 404,
                       "NotFound")
    assert st["message"] == "the server could not find the requested resource"
    assert_status(call(srv, "GET", "/apis/apps/v1/deployments"), 404, "NotFound")
    st = assert_status(call(srv, "POST", SVC + "/x", svc("x")), 405, "MethodNotAllowed")
    assert st["message"] == "the server does not allow this method on the requested resource"
    assert_status(call(srv, "POST", "/api/v1/services", svc("y")), 405, "MethodNotAllowed")
    assert_status(call(srv, "DELETE", SVC), 405, "MethodNotAllowed")
    # body problems
    st = assert_status(call(srv, "POST", SVC, b"{oops"), 400, "BadRequest")
    assert st["message"].startswith("the object provided is unrecognized (must be of type "
                                    "Service)")
    bad = svc("y")
    bad["spec"]["ports"][0]["port"] = "80"
    st = assert_status(call(srv, "POST", SVC, bad), 400, "BadRequest")
    assert st["message"] == ('Service in version "v1" cannot be handled as a Service: json: '
                             'cannot unmarshal string into Go struct field '
                             'ServicePort.spec.ports.port of type int32')
    bad = svc("y")
    bad["metadata"]["annotations"] = {"a": 1}
    assert_status(call(srv, "POST", SVC, bad), 400, "BadRequest")
    bad = svc("y")
    bad["kind"] = "ConfigMap"
    assert_status(call(srv, "POST", SVC, bad), 400, "BadRequest")
    st = assert_status(call(srv, "POST", SVC, svc("y"), ctype="text/yaml"), 415,
                       "UnsupportedMediaType")
    # namespace in the body differs from the URL
    bad = svc("y")
    bad["metadata"]["namespace"] = "other"
    st = assert_status(call(srv, "POST", SVC, bad), 400, "BadRequest")
    assert st["message"] == ("the namespace of the provided object does not match the "
                             "namespace sent on the request")


def test_invalid_objects_are_422(srv):
    body = svc("")
    del body["metadata"]["name"]
    st = assert_status(call(srv, "POST", SVC, body), 422, "Invalid")
    assert st["message"] == ('Service "" is invalid: metadata.name: Required value: name or '
                             'generateName is required')
    assert st["details"] == {"kind": "Service", "causes": [{
        "reason": "FieldValueRequired", "message": "Required value: name or generateName is "
                                                   "required", "field": "metadata.name"}]}
    st = assert_status(call(srv, "POST", SVC, svc("x", type_="Magic")), 422, "Invalid")
    assert st["message"] == ('Service "x" is invalid: spec.type: Unsupported value: "Magic": '
                             'supported values: "ClusterIP", "ExternalName", "LoadBalancer", '
                             '"NodePort"')
    st = assert_status(call(srv, "POST", SVC, svc("Upper")), 422, "Invalid")
    assert st["details"]["causes"][0]["field"] == "metadata.name"
    body = svc("x")
    body["spec"]["ports"] = []
    assert_status(call(srv, "POST", SVC, body), 422, "Invalid")
    body = svc("x")
    body["spec"]["ports"][0]["port"] = 70000
    st = assert_status(call(srv, "POST", SVC, body), 422, "Invalid")
    assert "must be between 1 and 65535, inclusive" in st["message"]
    st = assert_status(call(srv, "POST", SVC, svc("x", labels={"bad key": "v"})), 422,
                       "Invalid")
    assert st["details"]["causes"][0]["field"] == "metadata.labels"
    st = assert_status(call(srv, "POST", SVC, svc("x", annotations={"a": "x" * 300000})),
                       422, "Invalid")
    assert "metadata.annotations: Too long: must have at most 262144 bytes" in st["message"]
    st = assert_status(call(srv, "POST", CM, {"metadata": {"name": "c"},
                                              "data": {"bad key": "v"}}), 422, "Invalid")
    assert st["details"]["causes"][0]["field"] == "data[bad key]"
    # the real server answers 500 to a create that carries a resourceVersion
    body = svc("x")
    body["metadata"]["resourceVersion"] = "5"
    r = call(srv, "POST", SVC, body)
    assert r.status == 500
    assert r.json["message"] == "resourceVersion should not be set on objects to be created"


def test_configmap_immutable(srv):
    call(srv, "POST", CM, {"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": True})
    st = assert_status(call(srv, "PATCH", CM + "/c", {"data": {"a": "2"}}, MERGE), 422,
                       "Invalid")
    assert st["details"]["causes"][0]["field"] == "data"
    assert call(srv, "PATCH", CM + "/c", {"metadata": {"labels": {"x": "y"}}}, MERGE).status \
        == 200


def test_request_body_limit(srv):
    r = call(srv, "POST", CM, b"x" * (3 * 1024 * 1024 + 1))
    assert_status(r, 413, "RequestEntityTooLarge")


# ---------------------------------------------------------------------------------------
# events

def test_events(srv):
    ev = {"metadata": {"name": "web.17a"}, "involvedObject": {
        "kind": "Service", "namespace": NS, "name": "web", "apiVersion": "v1"},
        "reason": "AddressAllocated", "message": "10.0.0.5", "type": "Normal",
        "source": {"component": "k8s-adapter"}, "count": 1,
        "firstTimestamp": "2026-11-23T15:00:00Z", "lastTimestamp": "2026-11-23T15:00:00Z"}
    r = call(srv, "POST", "/api/v1/namespaces/default/events", ev)
    assert r.status == 201, r
    o = r.json
    assert o["kind"] == "Event" and o["reportingComponent"] == "" and o["eventTime"] is None
    assert call(srv, "POST", "/api/v1/namespaces/default/events",
                dict(ev, metadata={"generateName": "web."}, reason="Other")).status == 201
    lst = call(srv, "GET", "/api/v1/namespaces/default/events?fieldSelector="
                           "involvedObject.name%3Dweb,reason%3DAddressAllocated").json
    assert [e["reason"] for e in lst["items"]] == ["AddressAllocated"]
    assert [e["reason"] for e in srv.events(involved_name="web")] == ["AddressAllocated",
                                                                       "Other"]
    assert srv.events(namespace="other") == []
    # the event must live in its object's namespace
    bad = dict(ev, metadata={"name": "x"})
    bad["involvedObject"] = dict(ev["involvedObject"], namespace="elsewhere")
    st = assert_status(call(srv, "POST", "/api/v1/namespaces/default/events", bad), 422,
                       "Invalid")
    assert st["details"]["causes"][0]["field"] == "involvedObject.namespace"
    # events are patched to bump their count (client-go does a strategic merge patch)
    r = call(srv, "PATCH", "/api/v1/namespaces/default/events/web.17a",
             {"count": 2, "lastTimestamp": "2026-11-23T15:01:00Z"}, SMP)
    assert r.status == 200 and r.json["count"] == 2


# ---------------------------------------------------------------------------------------
# auth

def test_bearer_token_auth_and_rotation():
    s = FakeApiServer(token="t1")
    s.start()
    try:
        st = assert_status(call(s, "GET", "/api/v1/services"), 401, "Unauthorized")
        assert st["message"] == "Unauthorized" and "details" not in st
        assert_status(call(s, "GET", "/api/v1/services", token="wrong"), 401, "Unauthorized")
        assert_status(call(s, "GET", "/healthz"), 401, "Unauthorized")
        assert call(s, "GET", "/api/v1/services", token="t1").status == 200
        w = Watch(s, "/api/v1/services?watch=1")
        assert w.status == 401 and w.body["reason"] == "Unauthorized"
        w.close()
        s.set_token("t2")
        assert_status(call(s, "GET", "/api/v1/services", token="t1"), 401, "Unauthorized")
        assert call(s, "GET", "/api/v1/services", token="t2").status == 200
        s.set_token("t3", keep_old=True)
        assert call(s, "GET", "/api/v1/services", token="t2").status == 200
        assert call(s, "GET", "/api/v1/services", token="t3").status == 200
        # 401s are logged like any request
        assert s.count_requests(path="/healthz") == 1
    finally:
        s.stop()


def test_anonymous_requests_are_forbidden_when_anonymous_auth_is_on():
    s = FakeApiServer(token="t", anonymous_auth=True)
    s.start()
    try:
        assert call(s, "GET", "/healthz").status == 200
        st = assert_status(call(s, "GET", "/api/v1/namespaces/default/services"), 403,
                           "Forbidden")
        assert st["message"] == ('services is forbidden: User "system:anonymous" cannot list '
                                 'resource "services" in API group "" in the namespace '
                                 '"default"')
        assert_status(call(s, "GET", "/api/v1/services", token="bad"), 401, "Unauthorized")
    finally:
        s.stop()


def test_rbac_style_denials(srv):
    create_svc(srv, "a")
    srv.forbid(verb="patch", resource="services/status")
    st = assert_status(call(srv, "PATCH", SVC + "/a/status", {"status": {}}, MERGE), 403,
                       "Forbidden")
    assert st["message"] == ('services "a" is forbidden: User "system:serviceaccount:'
                             'kube-system:k8s-adapter" cannot patch resource "services/status" '
                             'in API group "" in the namespace "default"')
    assert st["details"] == {"name": "a", "kind": "services"}
    assert call(srv, "PATCH", SVC + "/a", {"metadata": {}}, MERGE).status == 200
    srv.forbid(verb="watch", resource="services")
    st = assert_status(call(srv, "GET", "/api/v1/services?watch=1"), 403, "Forbidden")
    assert st["message"].endswith('cannot watch resource "services" in API group "" at the '
                                  'cluster scope')
    srv.allow_all()
    assert call(srv, "PATCH", SVC + "/a/status", {"status": {}}, MERGE).status == 200
    # A list or watch of one name by field selector is authorized as that name
    # (RequestInfo), so a rule for one name can refuse or allow it.
    srv.forbid(verb="list", resource="configmaps", name="kubevip")
    st = assert_status(call(srv, "GET", CM + "?fieldSelector=metadata.name%3Dkubevip"), 403,
                       "Forbidden")
    assert st["message"].startswith('configmaps "kubevip" is forbidden: ')
    assert st["details"]["name"] == "kubevip"
    assert call(srv, "GET", CM + "?fieldSelector=metadata.name%3Dother").status == 200
    assert call(srv, "GET", CM).status == 200


# ---------------------------------------------------------------------------------------
# fault injection and observation

def test_fail_next_watches_sends_one_error_event(srv):
    srv.fail_next_watches(1, code=500, path_prefix="/api/v1/services", message="etcd is down")
    w = Watch(srv, "/api/v1/services?watch=1")
    lines = w.rest()
    w.close()
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    st = lines[0]["object"]
    assert (st["kind"], st["code"], st["message"]) == ("Status", 500, "etcd is down")
    # Used up: the next watch is a normal one.
    w = Watch(srv, "/api/v1/services?watch=1&timeoutSeconds=1")
    assert all(ev["type"] != "ERROR" for ev in w.rest())
    w.close()


def test_fail_next(srv):
    srv.fail_next(2, code=503, path_prefix="/api/v1/services")
    for _ in range(2):
        assert_status(call(srv, "GET", "/api/v1/services"), 503, "ServiceUnavailable")
    assert call(srv, "GET", "/api/v1/services").status == 200
    srv.fail_next(1, code=429, method="PATCH")
    create_svc(srv, "a")      # not a PATCH: unaffected
    r = call(srv, "PATCH", SVC + "/a", {}, MERGE)
    # throttling answers come from a filter that writes plain text, not a Status
    assert r.status == 429 and r.headers["Retry-After"] == "1"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.raw == b"Too many requests, please try again later.\n"
    srv.fail_next(1, code=429, body="status", retry_after=3)
    r = call(srv, "GET", SVC)
    st = assert_status(r, 429, "TooManyRequests")
    assert r.headers["Retry-After"] == "3" and st["details"]["retryAfterSeconds"] == 3
    srv.fail_next(1, code=500)
    st = assert_status(call(srv, "GET", "/version"), 500, "InternalError")
    # a failing watch request fails before streaming
    srv.fail_next(1, code=410, path_prefix="/api/v1/services")
    w = Watch(srv, "/api/v1/services?watch=1")
    assert w.status == 410 and w.body["reason"] == "Expired"
    w.close()
    srv.fail_next(5, code=500, path_prefix="/nothing")
    srv.clear_faults()
    assert call(srv, "GET", "/nothing").status == 404


def test_hold_requests_until_released(srv):
    release = srv.hold_requests(path_prefix="/api/v1/services", method="GET")
    done = threading.Event()
    result = {}

    def get():
        result["status"] = call(srv, "GET", "/api/v1/services").status
        done.set()

    t = threading.Thread(target=get)
    t.start()
    assert srv.wait_for_requests(lambda log: any(r.path == "/api/v1/services" for r in log))
    # Logged on arrival, and held: another request is answered meanwhile.
    assert call(srv, "GET", "/api/v1/configmaps").status == 200
    assert not done.is_set()
    release.set()
    assert done.wait(10) and result["status"] == 200
    t.join()
    # count=1: the next one goes through.
    assert call(srv, "GET", "/api/v1/services").status == 200


def test_delay(srv):
    srv.delay(1.0, path_prefix="/api/v1/services", count=1)
    t0 = time.monotonic()
    assert call(srv, "GET", "/api/v1/services").status == 200
    assert time.monotonic() - t0 >= 1.0
    # count=1: the next request is not held (a loaded machine may still take a while
    # to answer it, but not the whole delay again).
    t0 = time.monotonic()
    call(srv, "GET", "/api/v1/services")
    assert time.monotonic() - t0 < 1.0


def test_drop_watches_breaks_the_stream_without_a_final_chunk(srv):
    w = Watch(srv, "/api/v1/services?watch=1")
    assert srv.wait_for_watchers(1)
    assert srv.drop_watches() == 1
    with pytest.raises((EOFError, ConnectionError)):
        w.event()
    assert not w.ended
    w.close()
    assert srv.wait_until(lambda: srv.watch_count() == 0)


def test_a_watch_whose_client_went_away_is_cleaned_up(srv):
    w = Watch(srv, "/api/v1/services?watch=1")
    assert srv.wait_for_watchers(1)
    w.close()
    assert srv.wait_until(lambda: srv.watch_count() == 0, timeout=10)


def test_inject_watch_line(srv):
    w = Watch(srv, "/api/v1/services?watch=1")
    assert srv.wait_for_watchers(1)
    assert srv.inject_watch_line(b'{"type":"ADDED","object":{"kind":"Serv\n') == 1
    create_svc(srv, "a")
    line = b""
    while not line.endswith(b"\n"):
        line += w.chunk()
    assert line == b'{"type":"ADDED","object":{"kind":"Serv\n'
    assert w.event()["object"]["metadata"]["name"] == "a"
    w.close()


def test_slow_watcher_is_closed_and_writers_are_not_blocked():
    s = FakeApiServer(watch_queue_size=5)
    s.start()
    try:
        w = Watch(s, "/api/v1/services?watch=1")
        assert s.wait_for_watchers(1)
        s.hold_watches()
        for i in range(30):        # completes although nobody drains the watcher
            create_svc(s, "s%02d" % i)
        s.release_watches()
        evs = w.rest()            # ends with the final chunk, like the real server
        assert w.ended and len(evs) <= 5
        assert s.wait_until(lambda: s.watch_count() == 0)
    finally:
        s.stop()


def test_request_log(srv):
    create_svc(srv, "a")
    call(srv, "GET", SVC + "/a")
    call(srv, "GET", SVC + "/a")
    call(srv, "PATCH", SVC + "/a", {"metadata": {}}, MERGE)
    w = Watch(srv, "/api/v1/services?watch=1&timeoutSeconds=1")
    w.rest()
    w.close()
    log = srv.request_log()
    assert log[0][:4] == ("POST", SVC, "", "application/json")
    assert all(a.at <= b.at for a, b in zip(log, log[1:])), "arrival times in order"
    assert log[3].method == "PATCH" and log[3].content_type == MERGE
    assert log[4].query == "watch=1&timeoutSeconds=1"
    assert srv.count_requests(method="GET", path=SVC + "/a") == 2
    assert srv.count_requests(method="PATCH") == 1
    assert srv.count_requests(watch=True) == 1
    assert srv.wait_for_requests(lambda log: len(log) == 5, timeout=1)
    srv.clear_request_log()
    assert srv.request_log() == []


def test_put_raw_bypasses_validation(srv):
    w = Watch(srv, "/api/v1/services?watch=1&resourceVersion=%d" % srv.resource_version())
    assert srv.wait_for_watchers(1)
    raw = {"kind": "Service", "apiVersion": "v1",
           "metadata": {"name": "evil", "namespace": NS,
                        "annotations": {"kube-vip.io/loadbalancerIPs": "999.1.1.1,,garbage"},
                        "labels": "not-a-map"},
           "spec": {"type": 42, "ports": "nope", "loadBalancerIP": ["x"]}}
    stored = srv.put_raw(NS, "services", raw)
    assert stored["metadata"]["resourceVersion"] == str(srv.resource_version())
    e = w.event()
    assert e["type"] == "ADDED" and e["object"]["spec"] == raw["spec"]
    got = call(srv, "GET", SVC + "/evil").json
    assert got["metadata"]["labels"] == "not-a-map"
    lst = call(srv, "GET", "/api/v1/services?labelSelector=a%3Db").json
    assert lst["items"] == []
    # writes through the API decode it like any other object: here, a clean 422/500
    r = call(srv, "PATCH", SVC + "/evil", {"metadata": {"labels": None}}, MERGE)
    assert r.status in (422, 500) and r.json["kind"] == "Status"
    srv.put_raw(NS, "Service", dict(raw, metadata=dict(raw["metadata"], labels={})))
    assert w.event()["type"] == "MODIFIED"
    assert call(srv, "DELETE", SVC + "/evil").status == 200
    w.close()


def test_python_side_api(srv):
    o = srv.create("services", svc("a"))
    assert srv.get("svc", NS, "a") == o
    assert srv.get("services", NS, "zz") is None
    o = srv.patch("services", NS, "a", {"metadata": {"labels": {"x": "1"}}})
    o["metadata"]["annotations"] = {"y": "2"}
    o = srv.update("services", o)
    assert o["metadata"]["annotations"] == {"y": "2"}
    o = srv.update_status(NS, "a", {"loadBalancer": {"ingress": [{"ip": "10.1.1.1"}]}})
    assert o["status"]["loadBalancer"]["ingress"] == [{"ip": "10.1.1.1", "ipMode": "VIP"}]
    assert [x["metadata"]["name"] for x in srv.list("services", label_selector="x=1")] == ["a"]
    with pytest.raises(ApiError) as ei:
        srv.create("services", svc("a"))
    assert ei.value.code == 409 and ei.value.status()["reason"] == "AlreadyExists"
    srv.delete("services", NS, "a")
    assert srv.list("services") == []


def test_namespaces_are_implicit(srv):
    assert call(srv, "GET", "/api/v1/namespaces/anything").json["status"] == {"phase": "Active"}
    names = [n["metadata"]["name"] for n in call(srv, "GET", "/api/v1/namespaces").json["items"]]
    assert "kube-system" in names and "default" in names
    s = FakeApiServer(namespaces=["default"])
    s.start()
    try:
        st = assert_status(call(s, "POST", "/api/v1/namespaces/nope/services", svc("a")), 404,
                           "NotFound")
        assert st["message"] == 'namespaces "nope" not found'
    finally:
        s.stop()


# ---------------------------------------------------------------------------------------
# lifecycle

def test_stop_closes_streams_and_idle_connections_and_joins_threads():
    before = {t.ident for t in threading.enumerate()}
    s = FakeApiServer()
    s.start()
    port = s.port
    w = Watch(s, "/api/v1/services?watch=1")
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read() == b"ok"
    assert s.wait_for_watchers(1)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 5
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftover == []
    # the open watch has ended (the server closes streams on shutdown)
    try:
        assert w.rest() == []
    except (EOFError, ConnectionError):
        pass
    w.close()
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    s.stop()       # idempotent


def test_listens_on_loopback_only(srv):
    assert srv._httpd.server_address[0] == "127.0.0.1"
    assert srv.url == "http://127.0.0.1:%d" % srv.port


def test_script_mode():
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, os.path.join(here, "fake_apiserver.py"), "--port",
                          "0", "--print-url"], stdout=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        assert re.match(r"^http://127\.0\.0\.1:\d+$", url)
        port = int(url.rsplit(":", 1)[1])
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/api/v1/namespaces/default/services")
        assert json.loads(c.getresponse().read())["kind"] == "ServiceList"
        c.close()
    finally:
        p.terminate()
        assert p.wait(timeout=20) == 0
        p.stdout.close()
