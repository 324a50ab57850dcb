"""k8s-adapter and ipamd against the test API server (tests/k8s/fake_apiserver.py).

Each test starts the test API server (in-process, dual-stack), a real ipamd (Unix
socket, data directory under tmp_path) and one or more real k8s-adapter processes, and
checks what the contract (shared/conformance/kube-vip.md, README "k8s-adapter") says a
cluster sees: annotations, spec.loadBalancerIP, labels, finalizers, Events, and the
leases ipamd holds. The adapter and ipamd must exit 0 on SIGTERM at the end of every
test (conftest.py); their stderr is attached to a failure.

Only conditions with deadlines are waited for (harness.wait_for); a "nothing happened"
check first waits for a later Service to be handled (Cluster.barrier), since the
adapter handles changes in order. ConfigMap pools use documentation address space
(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) except where a
conformance vector is replayed with its own values.
"""

import shutil

import pytest

from harness import (ANN_IFACE, ANN_IPS, CLASS, CM_NAME, CM_NS, FINALIZER, Creator,
                     annotations_of, carries_lease, finalizers_of, ips_of, labels_of,
                     scrape, service_manifest, wait_for)

GLOBAL = {"cidr-global": "192.0.2.0/24"}


def owner(ns, name):
    return f"k8s/{ns}/{name}"


def lease_addrs(cluster, ns, name):
    lease = cluster.lease(owner(ns, name))
    return list(lease.addresses) if lease is not None else None


def assert_untouched(cluster, ns, name):
    """The adapter left this Service alone: no marks, no Events, no lease."""
    o = cluster.svc(ns, name)
    assert ANN_IPS not in annotations_of(o), o
    assert "implementation" not in labels_of(o), o
    assert FINALIZER not in finalizers_of(o), o
    assert cluster.events(ns, name) == [], cluster.event_summary(ns, name)
    assert cluster.lease(owner(ns, name)) is None


def assert_unique_and_leased(cluster, services):
    """Every (ns, name) carries a lease (one address, or one per family for dual-stack
    Services), no address twice, and ipamd holds exactly these leases with these
    addresses."""
    seen = {}
    for ns, name in services:
        o = cluster.svc(ns, name)
        ips = ips_of(o)
        dual = (o["spec"].get("ipFamilyPolicy") or "SingleStack") != "SingleStack"
        assert carries_lease(o) and (len(ips) == 1 or dual and len(ips) == 2), \
            f"{ns}/{name}: {o}"
        for ip in ips:
            assert ip not in seen, f"{ip} handed to both {seen[ip]} and {ns}/{name}"
            seen[ip] = f"{ns}/{name}"
    leases = {l.owner: list(l.addresses) for l in cluster.leases()}
    want = {owner(ns, name): ips_of(cluster.svc(ns, name)) for ns, name in services}
    extra = sorted(set(leases) - set(want))
    missing = sorted(set(want) - set(leases))
    assert not extra and not missing, f"leases without Service: {extra[:10]}; " \
                                      f"Services without lease: {missing[:10]}"
    wrong = {o: (leases[o], want[o]) for o in want if leases[o] != want[o]}
    assert not wrong, f"lease differs from the Service's annotation: {wrong}"


# ------------------------------------------------------------------------------------
# allocation


def test_a_new_load_balancer_service_gets_the_first_address_of_its_namespace_pool(cluster):
    cluster.set_config({"cidr-global": "192.0.2.0/24", "cidr-team-a": "198.51.100.0/24"})
    cluster.adapter()
    cluster.create("web", "team-a", ports=[("TCP", 80), ("TCP", 443)])
    assert cluster.wait_assigned("team-a", "web") == ["198.51.100.1"]
    o = cluster.svc("team-a", "web")
    assert annotations_of(o)[ANN_IPS] == "198.51.100.1"
    assert o["spec"]["loadBalancerIP"] == "198.51.100.1"
    assert labels_of(o)["implementation"] == "kube-vip"
    assert FINALIZER in finalizers_of(o)
    assert not (o.get("status") or {}).get("loadBalancer", {}).get("ingress"), \
        "the adapter writes no status without --write-status"
    assert ANN_IFACE not in annotations_of(o)

    # Done at once: one Event, EnsuredLoadBalancer (EnsuringLoadBalancer only comes
    # when the first attempt does not complete; see the test with a failing PATCH).
    ensured = cluster.wait_event("team-a", "web", "EnsuredLoadBalancer", "Normal",
                                 "198.51.100.1")
    assert cluster.event_summary("team-a", "web") == [
        ("Normal", "EnsuredLoadBalancer", "Ensured load balancer with 198.51.100.1")]
    # Two API requests for this Service: its PATCH and its Event.
    assert cluster.srv.count_requests(
        method="PATCH", path_prefix="/api/v1/namespaces/team-a/services/") == 1
    assert cluster.srv.count_requests(
        method="POST", path_prefix="/api/v1/namespaces/team-a/events") == 1
    assert ensured["involvedObject"]["kind"] == "Service"
    assert ensured["involvedObject"]["uid"] == o["metadata"]["uid"]
    assert cluster.warnings("team-a", "web") == []

    lease = cluster.lease(owner("team-a", "web"))
    assert lease is not None and list(lease.addresses) == ["198.51.100.1"]
    assert lease.pool == "k8s.cidr-team-a"
    assert {(p.protocol.upper(), p.port) for p in lease.ports} == {("TCP", 80), ("TCP", 443)}

    # A namespace without its own pool uses the global one.
    cluster.create("web", "default")
    assert cluster.wait_assigned("default", "web") == ["192.0.2.1"]
    assert cluster.lease(owner("default", "web")).pool == "k8s.cidr-global"
    assert len(cluster.leases()) == 2
    # Nothing more was said about the first one meanwhile.
    cluster.wait_event("default", "web", "EnsuredLoadBalancer", "Normal", "192.0.2.1")
    assert [r for _, r, _ in cluster.event_summary("team-a", "web")] == ["EnsuredLoadBalancer"]


def test_the_interface_named_in_the_configmap_is_written_to_the_service(cluster):
    cluster.set_config({"cidr-global": "192.0.2.0/24", "interface-global": "eth0",
                        "interface-lan": "bond0.10"})
    cluster.adapter()
    cluster.create("web")
    cluster.create("web", "lan")
    cluster.wait_assigned("default", "web")
    cluster.wait_assigned("lan", "web")
    assert annotations_of(cluster.svc("default", "web"))[ANN_IFACE] == "eth0"
    assert annotations_of(cluster.svc("lan", "web"))[ANN_IFACE] == "bond0.10"


def test_the_pool_is_looked_up_as_cidr_ns_then_range_ns_then_cidr_global_then_range_global(
        cluster):
    cfg = {"cidr-a": "192.0.2.0/26", "range-a": "192.0.2.100-192.0.2.110",
           "range-b": "198.51.100.10-198.51.100.20",
           "cidr-global": "203.0.113.0/28", "range-global": "203.0.113.100-203.0.113.110"}
    cluster.set_config(cfg)
    a = cluster.adapter()
    for ns in ("a", "b", "c"):
        cluster.create("s", ns)
    assert cluster.wait_assigned("a", "s") == ["192.0.2.1"]       # cidr-a over range-a
    assert cluster.wait_assigned("b", "s") == ["198.51.100.10"]   # range-b over cidr-global
    assert cluster.wait_assigned("c", "s") == ["203.0.113.1"]     # cidr-global over range-global
    assert cluster.lease(owner("a", "s")).pool == "k8s.cidr-a"
    assert cluster.lease(owner("b", "s")).pool == "k8s.range-b"
    assert cluster.lease(owner("c", "s")).pool == "k8s.cidr-global"

    # Without cidr-global, range-global serves; c keeps what it holds.
    del cfg["cidr-global"]
    cluster.set_config(cfg, seen_by=a)
    cluster.create("s", "d")
    assert cluster.wait_assigned("d", "s") == ["203.0.113.100"]
    assert cluster.lease(owner("d", "s")).pool == "k8s.range-global"
    cluster.barrier()
    assert ips_of(cluster.svc("c", "s")) == ["203.0.113.1"]
    assert lease_addrs(cluster, "c", "s") == ["203.0.113.1"]
    assert cluster.warnings("c", "s") == []


def test_the_conformance_vector_for_picking_the_pool_gives_each_namespace_its_pool(cluster):
    # shared/conformance/kube-vip.md, "Vectors: picking the pool" (its own addresses).
    cluster.set_config({"cidr-dummystart": "172.16.0.1/24", "cidr-global": "192.168.1.1/24",
                        "cidr-system": "10.10.10.8/29", "allow-share-system": "true",
                        "cidr-dummyend": "172.16.0.2/24", "cidr-ipv6": "2001::10/127"})
    cluster.adapter()
    cluster.create("dns", "system", ports=[("UDP", 53)])
    assert cluster.wait_assigned("system", "dns") == ["10.10.10.8"]
    cluster.create("web", "system", ports=[("TCP", 80)])
    assert cluster.wait_assigned("system", "web") == ["10.10.10.8"]   # sharing on
    cluster.create("v6", "ipv6", families=["IPv6"])
    assert cluster.wait_assigned("ipv6", "v6") == ["2001::10"]
    cluster.create("dns", "basic", ports=[("UDP", 53)])
    assert cluster.wait_assigned("basic", "dns") == ["192.168.1.1"]
    cluster.create("web", "basic", ports=[("TCP", 80)])
    assert cluster.wait_assigned("basic", "web") == ["192.168.1.2"]   # sharing off
    assert cluster.lease(owner("system", "web")).pool == "k8s.cidr-system"
    assert cluster.lease(owner("ipv6", "v6")).pool == "k8s.cidr-ipv6"
    assert cluster.lease(owner("basic", "web")).pool == "k8s.cidr-global"


@pytest.mark.parametrize("options,expect", [
    # asc, skip-end-ips-in-cidr: CIDRs larger than /31 lose both ends; /31, ranges and
    # IPv6 keep them; .0 and .255 are never handed out.
    ({"skip-end-ips-in-cidr": "true"},
     {"skip": ["192.0.2.201", "192.0.2.202"], "pair": ["192.0.2.210", "192.0.2.211"],
      "edge": ["198.51.100.1", "203.0.113.254"], "wide": ["198.51.100.129", "198.51.100.130"],
      "v6": ["2001:db8::", "2001:db8::1"]}),
    # desc without skip: from the top, but never .255.
    ({"search-order": "desc"},
     {"skip": ["192.0.2.203", "192.0.2.202", "192.0.2.201", "192.0.2.200"],
      "pair": ["192.0.2.211", "192.0.2.210"],
      "edge": ["203.0.113.254", "198.51.100.1"], "wide": ["198.51.100.254", "198.51.100.253"],
      "v6": ["2001:db8::1", "2001:db8::"]}),
    # desc with skip.
    ({"search-order": "desc", "skip-end-ips-in-cidr": "true"},
     {"skip": ["192.0.2.202", "192.0.2.201"], "pair": ["192.0.2.211", "192.0.2.210"],
      "edge": ["203.0.113.254", "198.51.100.1"], "wide": ["198.51.100.254", "198.51.100.253"],
      "v6": ["2001:db8::1", "2001:db8::"]}),
], ids=["asc-skip", "desc", "desc-skip"])
def test_search_order_and_skip_end_ips_pick_addresses_and_dot_0_and_255_are_never_handed_out(
        cluster, options, expect):
    cfg = {"cidr-skip": "192.0.2.200/30", "cidr-pair": "192.0.2.210/31",
           "range-edge": "203.0.113.254-203.0.113.255,198.51.100.0-198.51.100.1",
           "cidr-wide": "198.51.100.128/25", "cidr-v6": "2001:db8::/127"}
    cfg.update(options)
    cluster.set_config(cfg)
    cluster.adapter()
    for ns, want in expect.items():
        fam = ["IPv6"] if ns == "v6" else None
        got = []
        for i in range(len(want)):
            cluster.create(f"s{i}", ns, families=fam)
            got += cluster.wait_assigned(ns, f"s{i}")
        assert got == want, f"namespace {ns} ({cfg[[k for k in cfg if k.endswith(ns)][0]]})"
    # The small pools are now exhausted: .0/.255 and skipped ends stay unused.
    for ns in ("skip", "pair", "edge", "v6"):
        cluster.create("last", ns, families=["IPv6"] if ns == "v6" else None)
        cluster.wait_event(ns, "last", "SyncLoadBalancerFailed", "Warning", "exhausted")
        assert cluster.lease(owner(ns, "last")) is None
        assert ips_of(cluster.svc(ns, "last")) == []


def test_a_dhcp_pool_gives_every_service_0_0_0_0(cluster):
    cluster.set_config({"cidr-global": "0.0.0.0/32"})
    cluster.adapter()
    for i in range(3):
        cluster.create(f"s{i}", ports=[("TCP", 80)])
    for i in range(3):
        cluster.wait_svc("default", f"s{i}", lambda o: ips_of(o) == ["0.0.0.0"],
                         "annotation 0.0.0.0")
        cluster.wait_svc("default", f"s{i}",
                         lambda o: o["spec"].get("loadBalancerIP") == "0.0.0.0" and
                         labels_of(o).get("implementation") == "kube-vip",
                         "spec.loadBalancerIP 0.0.0.0 and the label")
    for lease in cluster.leases():
        assert list(lease.addresses) == ["0.0.0.0"], lease
    for i in range(3):
        assert cluster.warnings("default", f"s{i}") == []


# ------------------------------------------------------------------------------------
# address families


def test_services_get_the_families_they_ask_for_and_require_dual_stack_fails_on_an_ipv4_pool(
        cluster):
    cluster.set_config({"cidr-dual": "192.0.2.0/24,2001:db8::/64",
                        "cidr-v4": "198.51.100.0/24"})
    cluster.adapter()
    cases = [
        ("dual", "v6", dict(families=["IPv6"]), ["2001:db8::"]),
        ("dual", "v4", dict(), ["192.0.2.1"]),
        ("dual", "pref6", dict(policy="PreferDualStack", families=["IPv6", "IPv4"]),
         ["2001:db8::1", "192.0.2.2"]),
        ("dual", "pref4", dict(policy="PreferDualStack"), ["192.0.2.3", "2001:db8::2"]),
        ("dual", "req6", dict(policy="RequireDualStack", families=["IPv6", "IPv4"]),
         ["2001:db8::3", "192.0.2.4"]),
        ("v4", "pref", dict(policy="PreferDualStack", families=["IPv4", "IPv6"]),
         ["198.51.100.1"]),
    ]
    for ns, name, kw, want in cases:
        cluster.create(name, ns, **kw)
        got = cluster.wait_assigned(ns, name)
        assert got == want, f"{ns}/{name} {kw}"
        assert cluster.svc(ns, name)["spec"]["loadBalancerIP"] == want[0]
        assert lease_addrs(cluster, ns, name) == want, "primary family first in the lease"

    cluster.create("req", "v4", policy="RequireDualStack")
    cluster.wait_event("v4", "req", "SyncLoadBalancerFailed", "Warning", "IPv6")
    cluster.barrier("v4")
    o = cluster.svc("v4", "req")
    assert ips_of(o) == [] and FINALIZER not in finalizers_of(o), o
    assert cluster.lease(owner("v4", "req")) is None
    assert len(cluster.leases()) == len(cases) + 1  # the barrier's


# ------------------------------------------------------------------------------------
# requested addresses


def test_requested_addresses_are_honoured_held_once_and_moved_when_changed(cluster):
    cluster.set_config({"cidr-global": "192.0.2.0/24"})
    a = cluster.adapter()
    cluster.create("by-spec", lb_ip="192.0.2.77")
    assert cluster.wait_assigned("default", "by-spec") == ["192.0.2.77"]
    assert annotations_of(cluster.svc("default", "by-spec"))[ANN_IPS] == "192.0.2.77"
    cluster.create("by-ann", annotations={ANN_IPS: "192.0.2.78"})
    assert cluster.wait_assigned("default", "by-ann") == ["192.0.2.78"]
    assert cluster.svc("default", "by-ann")["spec"]["loadBalancerIP"] == "192.0.2.78"

    # Outside every pool: a static reservation.
    cluster.create("outside", lb_ip="203.0.113.10")
    assert cluster.wait_assigned("default", "outside") == ["203.0.113.10"]
    lease = cluster.lease(owner("default", "outside"))
    assert list(lease.addresses) == ["203.0.113.10"] and lease.pool == ""

    # Held by another Service: reported, never handed out twice.
    cluster.create("dup", lb_ip="192.0.2.77")
    ev = cluster.wait_event("default", "dup", "SyncLoadBalancerFailed", "Warning",
                            "192.0.2.77")
    assert "by-spec" in ev["message"], f"the Event names the holder: {ev['message']!r}"
    o = cluster.svc("default", "dup")
    assert ANN_IPS not in annotations_of(o) and FINALIZER not in finalizers_of(o), o
    assert cluster.lease(owner("default", "dup")) is None
    assert ips_of(cluster.svc("default", "by-spec")) == ["192.0.2.77"]

    # A pool added later over the reserved address never hands it out.
    cluster.set_config({"cidr-global": "192.0.2.0/24", "cidr-other": "203.0.113.8/30"},
                       seen_by=a)
    got = []
    for i in range(3):
        cluster.create(f"x{i}", "other")
        got += cluster.wait_assigned("other", f"x{i}")
    assert got == ["203.0.113.8", "203.0.113.9", "203.0.113.11"]

    # Changing spec.loadBalancerIP moves the lease; the old address is free again,
    # and the Service that wanted it gets it.
    cluster.patch("default", "by-spec", {"spec": {"loadBalancerIP": "192.0.2.99"}})
    cluster.wait_svc("default", "by-spec", lambda o: ips_of(o) == ["192.0.2.99"] and
                     carries_lease(o), "annotation moved to 192.0.2.99")
    wait_for(lambda: lease_addrs(cluster, "default", "by-spec") == ["192.0.2.99"],
             "the lease of by-spec to move to 192.0.2.99")
    assert cluster.wait_assigned("default", "dup") == ["192.0.2.77"]

    # Changing the annotation (the kube-vip way) moves it too.
    cluster.patch("default", "by-ann", {"metadata": {"annotations": {ANN_IPS: "192.0.2.79"}}})
    cluster.wait_svc("default", "by-ann",
                     lambda o: ips_of(o) == ["192.0.2.79"] and
                     o["spec"].get("loadBalancerIP") == "192.0.2.79",
                     "annotation and spec.loadBalancerIP at 192.0.2.79")
    wait_for(lambda: lease_addrs(cluster, "default", "by-ann") == ["192.0.2.79"],
             "the lease of by-ann to move to 192.0.2.79")
    held = [a for l in cluster.leases() for a in l.addresses]
    assert len(held) == len(set(held)), held


def test_cluster_ip_services_are_ignored(cluster):
    cluster.set_config(GLOBAL)
    cluster.adapter()
    cluster.create("plain", type="ClusterIP")
    cluster.create("nodeport", type="NodePort")
    cluster.create("with-ann", type="ClusterIP", annotations={ANN_IPS: "192.0.2.1"})
    cluster.barrier()
    for name in ("plain", "nodeport"):
        assert_untouched(cluster, "default", name)
    o = cluster.svc("default", "with-ann")
    assert FINALIZER not in finalizers_of(o) and cluster.events("default", "with-ann") == []
    assert cluster.lease(owner("default", "with-ann")) is None
    assert len(cluster.leases()) == 1


# ------------------------------------------------------------------------------------
# sharing


def test_services_share_an_address_only_when_allowed_and_their_ports_are_disjoint(cluster):
    cluster.set_config({"cidr-share": "192.0.2.0/24", "allow-share-share": "true",
                        "cidr-solo": "198.51.100.0/24",
                        "cidr-v6share": "2001:db8::/64", "allow-share-v6share": "true"})
    cluster.adapter()
    cluster.create("dns-tcp", "share", ports=[("TCP", 53)])
    x = cluster.wait_assigned("share", "dns-tcp")
    assert x == ["192.0.2.1"]
    cluster.create("dns-udp", "share", ports=[("UDP", 53)])
    assert cluster.wait_assigned("share", "dns-udp") == x, "TCP 53 and UDP 53 share"
    cluster.create("web1", "share", ports=[("TCP", 80)])
    assert cluster.wait_assigned("share", "web1") == x
    cluster.create("web2", "share", ports=[("TCP", 80)])
    y = cluster.wait_assigned("share", "web2")
    assert y != x, "TCP 80 twice does not share"
    holders = [l.owner for l in cluster.leases() if list(l.addresses) == x]
    assert sorted(holders) == sorted(owner("share", n) for n in ("dns-tcp", "dns-udp", "web1"))

    # No sharing without allow-share.
    cluster.create("a", "solo", ports=[("TCP", 53)])
    cluster.create("b", "solo", ports=[("UDP", 53)])
    a, b = cluster.wait_assigned("solo", "a"), cluster.wait_assigned("solo", "b")
    assert a != b

    # IPv6 shares too.
    cluster.create("a", "v6share", families=["IPv6"], ports=[("TCP", 53)])
    cluster.create("b", "v6share", families=["IPv6"], ports=[("UDP", 53)])
    assert cluster.wait_assigned("v6share", "a") == cluster.wait_assigned("v6share", "b")


def test_a_service_with_no_ports_never_shares(cluster):
    # The API server refuses a LoadBalancer Service without ports, so these are stored
    # raw, as if an older server or a bug had let them through.
    cluster.set_config({"cidr-share": "192.0.2.0/24", "allow-share-share": "true"})
    cluster.adapter()
    cluster.create("web", "share", ports=[("TCP", 80)])
    x = cluster.wait_assigned("share", "web")
    for name, lb_ip in (("asks", x[0]), ("fresh", None)):
        raw = service_manifest(name, "share", ports=(), lb_ip=lb_ip)
        raw["metadata"].update(uid=f"00000000-0000-0000-0000-00000000000{len(name)}",
                               creationTimestamp="2024-01-01T00:00:00Z")
        raw["spec"]["ipFamilies"] = ["IPv4"]
        raw["spec"]["ipFamilyPolicy"] = "SingleStack"
        cluster.srv.put_raw("share", "services", raw)
    ev = cluster.wait_event("share", "asks", "SyncLoadBalancerFailed", "Warning", x[0])
    assert "web" in ev["message"], ev["message"]
    assert cluster.lease(owner("share", "asks")) is None
    lease = wait_for(lambda: cluster.lease(owner("share", "fresh")),
                     "a lease for the Service without ports")
    assert list(lease.addresses) != x and len(lease.ports) == 0
    holders = [l.owner for l in cluster.leases() if list(l.addresses) == x]
    assert holders == [owner("share", "web")]


# ------------------------------------------------------------------------------------
# release


def test_deleting_a_service_releases_its_lease_and_removes_the_finalizer(cluster):
    cluster.set_config(GLOBAL)
    cluster.adapter()
    cluster.create("web")
    assert cluster.wait_assigned("default", "web") == ["192.0.2.1"]
    cluster.srv.delete("services", "default", "web")
    wait_for(lambda: cluster.svc("default", "web") is None,
             "the Service to be really deleted (finalizer removed)")
    cluster.wait_no_lease(owner("default", "web"))
    cluster.create("next")
    assert cluster.wait_assigned("default", "next") == ["192.0.2.1"]


def test_changing_the_type_to_cluster_ip_releases_the_address_and_removes_the_marks(cluster):
    cluster.set_config(GLOBAL)
    cluster.adapter()
    cluster.create("web")
    assert cluster.wait_assigned("default", "web") == ["192.0.2.1"]
    cluster.patch("default", "web", {"spec": {"type": "ClusterIP"}})
    cluster.wait_svc("default", "web",
                     lambda o: FINALIZER not in finalizers_of(o) and
                     ANN_IPS not in annotations_of(o) and
                     "implementation" not in labels_of(o),
                     "finalizer, annotation and label removed")
    cluster.wait_no_lease(owner("default", "web"))
    cluster.create("next")
    assert cluster.wait_assigned("default", "next") == ["192.0.2.1"]


def test_in_class_mode_only_services_of_the_class_are_handled_and_changing_the_class_releases(
        cluster):
    cluster.set_config(GLOBAL)
    cluster.adapter(env={"KUBEVIP_ENABLE_LOADBALANCERCLASS": "true"})
    cluster.create("no-class")
    cluster.create("other-class", lb_class="example.com/other")
    cluster.create("ours", lb_class=CLASS)
    assert cluster.wait_assigned("default", "ours") == ["192.0.2.1"]
    assert_untouched(cluster, "default", "no-class")
    assert_untouched(cluster, "default", "other-class")

    # The API server keeps loadBalancerClass immutable; an object whose class changed
    # anyway (stored raw) is let go of.
    o = cluster.svc("default", "ours")
    o["spec"]["loadBalancerClass"] = "example.com/other"
    cluster.srv.put_raw("default", "services", o)
    cluster.wait_svc("default", "ours",
                     lambda o: FINALIZER not in finalizers_of(o) and
                     ANN_IPS not in annotations_of(o),
                     "finalizer and annotation removed after the class changed")
    cluster.wait_no_lease(owner("default", "ours"))


def test_without_class_mode_services_with_a_class_are_ignored(cluster):
    cluster.set_config(GLOBAL)
    cluster.adapter()
    cluster.create("classy", lb_class=CLASS)
    cluster.barrier()
    assert_untouched(cluster, "default", "classy")


# ------------------------------------------------------------------------------------
# the ConfigMap


def test_without_the_configmap_services_wait_and_get_addresses_once_it_is_created(cluster):
    a = cluster.adapter()
    cluster.create("web")
    cluster.wait_event("default", "web", "SyncLoadBalancerFailed", "Warning",
                       "no address pools configured")
    assert cluster.srv.get("configmaps", CM_NS, CM_NAME) is None
    assert cluster.lease(owner("default", "web")) is None
    cluster.set_config(GLOBAL)
    assert cluster.wait_assigned("default", "web") == ["192.0.2.1"]
    assert cluster.srv.count_requests(method="POST", path_prefix="/api/v1/namespaces/"
                                      f"{CM_NS}/configmaps") == 0, "the adapter created it"
    assert a.running()


def test_the_configmap_name_and_namespace_come_from_the_environment(cluster):
    cluster.set_config({"cidr-global": "198.51.100.0/24"})
    cluster.set_config({"cidr-global": "203.0.113.0/24"}, name="lb-pools", namespace="infra")
    cluster.adapter(env={"KUBEVIP_CONFIG_MAP": "lb-pools", "KUBEVIP_NAMESPACE": "infra"})
    cluster.create("web")
    assert cluster.wait_assigned("default", "web") == ["203.0.113.1"]


def test_an_invalid_pool_entry_is_reported_quoting_the_entry(cluster):
    cfg = {"cidr-bad": "192.0.2.0/25, 192.0.2.300/24",
           "range-inverted": "198.51.100.20-198.51.100.10",
           "range-mixed": "198.51.100.1-2001:db8::1",
           "cidr-global": " 203.0.113.0/24 "}
    cluster.set_config(cfg)
    a = cluster.adapter()
    entries = {"bad": "192.0.2.300/24", "inverted": "198.51.100.20-198.51.100.10",
               "mixed": "198.51.100.1-2001:db8::1"}
    for ns in entries:
        cluster.create("s", ns)
    cluster.create("s", "default")
    assert cluster.wait_assigned("default", "s") == ["203.0.113.1"], "whitespace is tolerated"
    for ns, entry in entries.items():
        cluster.wait_event(ns, "s", "SyncLoadBalancerFailed", "Warning", entry)
        assert cluster.lease(owner(ns, "s")) is None
        assert ips_of(cluster.svc(ns, "s")) == []
    # Fixed, the waiting Services get addresses.
    cfg["cidr-bad"] = "192.0.2.0/25"
    cluster.set_config(cfg)
    assert cluster.wait_assigned("bad", "s") == ["192.0.2.1"]
    assert a.running()


def test_a_pool_change_never_moves_an_address_a_service_holds(cluster):
    c = cluster
    c.set_config({"cidr-global": "192.0.2.0/24"})
    a = c.adapter()
    c.create("old")
    assert c.wait_assigned("default", "old") == ["192.0.2.1"]
    c.set_config({"cidr-global": "198.51.100.0/24"}, seen_by=a)
    c.create("new")
    assert c.wait_assigned("default", "new") == ["198.51.100.1"]
    c.barrier()
    assert ips_of(c.svc("default", "old")) == ["192.0.2.1"]
    assert lease_addrs(c, "default", "old") == ["192.0.2.1"]
    assert c.warnings("default", "old") == []


def test_deleting_the_configmap_keeps_every_address_and_new_services_wait(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    c.create("old")
    assert c.wait_assigned("default", "old") == ["192.0.2.1"]
    before = a.count(r"ConfigMap kube-system/kubevip deleted")
    c.srv.delete("configmaps", CM_NS, CM_NAME)
    a.wait_log(r"ConfigMap kube-system/kubevip deleted", before + 1)
    c.create("new")
    c.wait_event("default", "new", "SyncLoadBalancerFailed", "Warning",
                 "no address pools configured")
    assert c.lease(owner("default", "new")) is None
    assert ips_of(c.svc("default", "old")) == ["192.0.2.1"]
    assert lease_addrs(c, "default", "old") == ["192.0.2.1"]
    assert FINALIZER in finalizers_of(c.svc("default", "old"))
    c.set_config(GLOBAL)
    assert c.wait_assigned("default", "new") == ["192.0.2.2"]
    assert lease_addrs(c, "default", "old") == ["192.0.2.1"]


def test_a_periodic_resync_releases_orphans_and_rewrites_nothing(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter(resync=1)
    names = [f"s-{i}" for i in range(5)]
    for n in names:
        c.create(n)
    addrs = {n: c.wait_assigned("default", n) for n in names}
    a.wait_synced()
    for n in names:
        c.wait_event("default", n, "EnsuredLoadBalancer")
    c.srv.clear_request_log()
    # A lease of ours whose Service never existed (left by a crashed replica, say).
    c.ipam.Allocate(pool="k8s.cidr-global", owner=owner("default", "ghost"))
    c.wait_no_lease(owner("default", "ghost"), timeout=30)
    writes = [r for r in c.srv.request_log() if r.method != "GET"]
    assert writes == [], f"a resync wrote to the API server: {writes[:5]}"
    assert {n: ips_of(c.svc("default", n)) for n in names} == addrs
    assert_unique_and_leased(c, [("default", n) for n in names])


# ------------------------------------------------------------------------------------
# start-up order and restarts


def test_at_start_up_carried_addresses_are_kept_pending_services_get_others_and_orphans_go(
        cluster):
    c = cluster
    c.set_config(GLOBAL)
    # Created first, so it cannot win by coming first.
    c.create("early")
    # As kube-vip-cloud-provider left them, with and without its label, and by hand.
    c.create("kvcp", lb_ip="192.0.2.1", annotations={ANN_IPS: "192.0.2.1"},
             labels={"implementation": "kube-vip", "ipam-address": "192.0.2.1"})
    c.srv.update_status("default", "kvcp", {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
    c.create("annotated", annotations={ANN_IPS: "192.0.2.2"})
    c.create("handset", lb_ip="192.0.2.3")
    c.create("plain", type="ClusterIP")
    # Two Services set by hand to one address: one keeps it, the other is told.
    c.create("dup-a", lb_ip="192.0.2.9")
    c.create("dup-b", lb_ip="192.0.2.9")
    # Deleted while no adapter ran: the finalizer holds it.
    c.create("leaving", lb_ip="192.0.2.8", annotations={ANN_IPS: "192.0.2.8"},
             labels={"implementation": "kube-vip"}, finalizers=[FINALIZER])
    c.srv.delete("services", "default", "leaving")
    assert c.svc("default", "leaving")["metadata"].get("deletionTimestamp")
    # Leases ipamd holds from before: Services gone or not ours any more, and a lease
    # of someone else.
    c.ipam.apply_pool("k8s.cidr-global", ["192.0.2.0/24"], avoid_buggy_ips=True)
    c.ipam.Allocate(pool="k8s.cidr-global", owner=owner("default", "ghost"),
                    addresses=["192.0.2.5"])
    c.ipam.Allocate(pool="k8s.cidr-global", owner=owner("default", "plain"),
                    addresses=["192.0.2.6"])
    c.ipam.Allocate(pool="k8s.cidr-global", owner="vm/keep", addresses=["192.0.2.7"])
    c.ipam.Allocate(pool="k8s.cidr-global", owner=owner("default", "leaving"),
                    addresses=["192.0.2.8"])

    a = c.adapter()
    a.wait_synced()
    want = {"kvcp": "192.0.2.1", "annotated": "192.0.2.2", "handset": "192.0.2.3"}
    for name, ip in want.items():
        assert c.wait_assigned("default", name) == [ip], name
        assert lease_addrs(c, "default", name) == [ip]
    assert "ipam-address" not in labels_of(c.svc("default", "kvcp")), "legacy label removed"
    # Re-claimed before any allocation; orphans released only after it.
    assert c.wait_assigned("default", "early") == ["192.0.2.4"]
    c.wait_no_lease(owner("default", "ghost"))
    c.wait_no_lease(owner("default", "plain"))
    assert list(c.lease("vm/keep").addresses) == ["192.0.2.7"]
    assert_untouched(c, "default", "plain")
    for name in want:
        assert c.warnings("default", name) == []
    wait_for(lambda: c.svc("default", "leaving") is None,
             "the Service deleted meanwhile to be let go of")
    c.wait_no_lease(owner("default", "leaving"))
    # Exactly one of the two hand-set duplicates holds 192.0.2.9.
    holder = wait_for(lambda: [n for n in ("dup-a", "dup-b")
                               if lease_addrs(c, "default", n) == ["192.0.2.9"]],
                      "one of dup-a and dup-b to hold 192.0.2.9")
    assert len(holder) == 1, holder
    loser = "dup-b" if holder == ["dup-a"] else "dup-a"
    c.wait_assigned("default", holder[0])
    c.wait_event("default", loser, "SyncLoadBalancerFailed", "Warning",
                 ("192.0.2.9", holder[0]))
    o = c.svc("default", loser)
    assert ANN_IPS not in annotations_of(o) and FINALIZER not in finalizers_of(o), o
    assert c.lease(owner("default", loser)) is None


def _assigned(cluster, ns, names):
    objs = {o["metadata"]["name"]: o for o in cluster.srv.list("services", ns)}
    return [n for n in names if n in objs and carries_lease(objs[n])]


@pytest.mark.parametrize("replicas", [1, 2], ids=["one-adapter", "two-adapters-at-once"])
def test_an_adapter_killed_during_200_creations_and_restarted_gives_each_one_unique_address(
        cluster, replicas):
    c = cluster
    c.set_config(GLOBAL)
    first = c.adapter()
    first.wait_synced()
    names = [f"svc-{i}" for i in range(200)]
    # The adapter dies with svc-40's lease allocated and its PATCH in flight (held by
    # the server, which completes it later, as a real one would).
    victim = "/api/v1/namespaces/default/services/svc-40"
    c.srv.delay(2.0, path_prefix=victim, method="PATCH", count=1)
    head = Creator(c, names[:100])
    head.start()
    assert c.srv.wait_for_requests(lambda log: any(r.method == "PATCH" and r.path == victim
                                                   for r in log), timeout=60)
    first.kill()
    assert c.lease(owner("default", "svc-40")) is not None
    tail = Creator(c, names[100:])
    head.finish()
    tail.start()
    if replicas == 1:
        first.start()
    else:
        c.adapter()
        c.adapter()
    tail.finish()
    wait_for(lambda: len(_assigned(c, "default", names)) == 200,
             "all 200 Services to get addresses", timeout=120, interval=0.1)
    # Let every adapter finish what it had queued (a later Service is handled after).
    for a in c.adapters[1:] or [first]:
        a.wait_synced()
    c.barrier("default", "after")
    assert_unique_and_leased(c, [("default", n) for n in names + ["after"]])
    assert len(c.leases()) == 201


def test_two_adapters_starting_together_never_release_each_others_leases(cluster):
    c = cluster
    c.set_config(GLOBAL)
    Event = c.pb.ipam.Event
    changes = c.ipam.Watch(from_revision=0, timeout=120)
    changes.header()
    c.create("early")
    # The first adapter stalls in its start-up (its PATCH of `early' is held) ...
    held = "/api/v1/namespaces/default/services/early"
    c.srv.delay(5.0, path_prefix=held, method="PATCH", count=1)
    first = c.adapter()
    assert c.srv.wait_for_requests(lambda log: any(r.method == "PATCH" and r.path == held
                                                   for r in log), timeout=60)
    # ... while a Service it has not listed is created and handled by a second one.
    c.create("late")
    c.adapter()
    late = c.wait_assigned("default", "late")
    first.wait_synced()
    c.create("next")
    nxt = c.wait_assigned("default", "next")
    assert nxt != late, f"{late} handed out twice (late and next)"
    changes.wait_event(lambda e: e.type == Event.LEASE_PUT and
                       e.lease.owner == owner("default", "next"))
    released = [e for e in changes.events if e.type == Event.LEASE_DELETED]
    assert released == [], "an adapter released a lease of a Service it had not seen yet: " \
        + ", ".join(f"{e.lease.owner} ({e.reason})" for e in released)
    changes.close()
    assert_unique_and_leased(c, [("default", n) for n in ("early", "late", "next")])


def test_after_ipamd_restarts_with_an_empty_data_directory_services_keep_their_addresses(
        cluster):
    c = cluster
    c.set_config({"cidr-global": "192.0.2.0/24", "cidr-dual": "198.51.100.0/24,2001:db8::/64"})
    a = c.adapter()
    names = [f"svc-{i}" for i in range(20)]
    for n in names:
        c.create(n)
    c.create("both", "dual", policy="RequireDualStack")
    c.create("static", lb_ip="203.0.113.5")
    before = {n: c.wait_assigned("default", n) for n in names + ["static"]}
    before_dual = c.wait_assigned("dual", "both")
    a.wait_synced()

    c.ipamd.stop()
    shutil.rmtree(c.ipamd.data_dir)
    assert not c.ipamd.data_dir.exists()
    c.ipamd.start()
    c.create("after")
    c.create("after", "dual", policy="RequireDualStack")
    got = c.wait_assigned("default", "after")
    got_dual = c.wait_assigned("dual", "after")
    assert got[0] not in {ip for v in before.values() for ip in v}
    assert not set(got_dual) & set(before_dual)
    assert {n: ips_of(c.svc("default", n)) for n in before} == before
    assert ips_of(c.svc("dual", "both")) == before_dual
    assert_unique_and_leased(c, [("default", n) for n in names + ["static", "after"]] +
                             [("dual", "both"), ("dual", "after")])
    assert c.lease(owner("default", "static")).pool == ""
    assert a.running()


# ------------------------------------------------------------------------------------
# faults of the API server


def test_dropped_watches_are_resumed_and_changes_made_meanwhile_are_seen(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    a.wait_synced()
    assert c.srv.wait_for_watchers(2, timeout=30)
    c.srv.hold_watches()
    c.create("while-dropped")
    c.set_config({"cidr-global": "192.0.2.0/24", "cidr-extra": "198.51.100.0/24"})
    assert c.srv.drop_watches() >= 2
    c.srv.release_watches()
    assert c.wait_assigned("default", "while-dropped") == ["192.0.2.1"]
    c.create("s", "extra")
    assert c.wait_assigned("extra", "s") == ["198.51.100.1"]
    lists = c.srv.count_requests(method="GET", path="/api/v1/services", watch=False)
    assert lists == 1, f"a dropped watch resumes without a relist ({lists} LISTs)"


def _is_watch_of(r, path):
    return r.method == "GET" and r.path == path and "watch=1" in r.query


def _watch_times(c, path, at_least):
    """Waits until the adapter has made at_least watch requests for path (since the
    request log was cleared); returns when each arrived."""
    assert c.srv.wait_for_requests(
        lambda log: sum(_is_watch_of(r, path) for r in log) >= at_least, timeout=30), \
        f"fewer than {at_least} watches of {path}"
    return [r.at for r in c.srv.request_log() if _is_watch_of(r, path)]


def _synced_adapter(c):
    c.set_config(GLOBAL)
    a = c.adapter()
    a.wait_synced()
    assert c.srv.wait_for_watchers(2, timeout=30)
    c.srv.clear_request_log()
    return a


@pytest.mark.parametrize("resource", ["services", "configmaps"])
def test_a_refused_watch_is_retried_with_growing_backoff_not_in_a_loop(cluster, resource):
    """A real API server refuses a watch at once with 403 (RBAC), 429 (priority and
    fairness, a restarting watch cache) or 5xx: the adapter backs off, doubling, instead
    of reopening the stream as fast as it can, and resumes when it is allowed again."""
    c = cluster
    a = _synced_adapter(c)
    path = "/api/v1/services" if resource == "services" else \
        f"/api/v1/namespaces/{CM_NS}/configmaps"
    c.srv.forbid(verb="watch", resource=resource)
    assert c.srv.drop_watches(path) == 1
    at = _watch_times(c, path, 3)
    gaps = [b - a for a, b in zip(at, at[1:])]
    # 0.5 s, then doubling (at least; the first reopen may already count as a failure).
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95, gaps
    kind = "Service" if resource == "services" else "ConfigMap"
    assert f"{kind} watch ended (403" in a.log() and "resuming in" in a.log()
    # Allowed again: the next attempt opens it (a watch resumes from its
    # resourceVersion, so what changes from here on reaches the adapter). A retry
    # that arrived before allow_all was still refused: wait for an accepted stream.
    c.srv.allow_all()
    assert c.srv.wait_for_watchers(1, timeout=30, path_prefix=path), \
        f"no {path} watch accepted after the refusals ended"
    c.set_config({"cidr-global": "198.51.100.0/24"}, seen_by=a)
    c.create("after")
    assert c.wait_assigned("default", "after", timeout=30) == ["198.51.100.1"]


@pytest.mark.parametrize("resource", ["services", "configmaps"])
def test_watches_that_end_with_an_error_event_are_retried_with_growing_backoff(cluster,
                                                                              resource):
    """A watch the API server accepts and then ends with an ERROR event (its storage
    failing under it) is also retried with backoff, and so is the relist (Services) or
    re-read (ConfigMap) that comes with it."""
    c = cluster
    a = _synced_adapter(c)
    path = "/api/v1/services" if resource == "services" else \
        f"/api/v1/namespaces/{CM_NS}/configmaps"
    c.srv.fail_next_watches(3, code=500, path_prefix=path, message="etcd is down")
    assert c.srv.drop_watches(path) == 1
    at = _watch_times(c, path, 4)
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95 and gaps[2] >= 1.95, gaps
    # One read per failed watch; the ConfigMap is also read again after the drop.
    reads = c.srv.count_requests(method="GET", path=path, watch=False)
    want = 3 if resource == "services" else 4
    assert reads == want, f"{reads} LISTs of {path} for 3 failed watches"
    kind = "Service" if resource == "services" else "ConfigMap"
    assert f"{kind} watch error" in a.log()
    c.set_config({"cidr-global": "198.51.100.0/24"}, seen_by=a)
    c.create("after")
    assert c.wait_assigned("default", "after") == ["198.51.100.1"]


def test_queued_work_goes_on_while_a_relist_waits_out_its_backoff(cluster):
    """While the Services relist waits (here the 60 s an ERROR event's
    retryAfterSeconds asks for), what is already known is still served: a ConfigMap
    change gives a waiting Service its address from the cache, before the relist."""
    c = cluster
    c.set_config({"range-global": "192.0.2.1-192.0.2.1"})
    a = c.adapter()
    a.wait_synced()
    assert c.srv.wait_for_watchers(2, timeout=30)
    c.create("first")
    assert c.wait_assigned("default", "first") == ["192.0.2.1"]
    c.create("second")
    c.wait_event("default", "second", "SyncLoadBalancerFailed", "Warning", ["exhausted"])
    path = "/api/v1/services"
    c.srv.clear_request_log()
    c.srv.fail_next_watches(1, code=429, path_prefix=path, message="too many requests",
                            retry_after=60)
    assert c.srv.drop_watches(path) == 1
    wait_for(lambda: "Service watch error 429: relisting in 60.0 s" in a.log(),
             "the adapter to read the ERROR event")
    c.set_config({"range-global": "192.0.2.1-192.0.2.2"}, seen_by=a)
    assert c.wait_assigned("default", "second") == ["192.0.2.2"]
    assert c.srv.count_requests(method="GET", path=path, watch=False) == 0, \
        "served only after the relist"
    assert sum(_is_watch_of(r, path) for r in c.srv.request_log()) == 1


def test_a_throttled_watch_waits_as_long_as_retry_after_asks(cluster):
    c = cluster
    _synced_adapter(c)
    path = "/api/v1/services"
    c.srv.fail_next(1, code=429, method="GET", path_prefix=path, retry_after=3)
    assert c.srv.drop_watches(path) == 1
    at = _watch_times(c, path, 2)
    assert at[1] - at[0] >= 2.9, at
    c.create("after")
    assert c.wait_assigned("default", "after") == ["192.0.2.1"]
    # Resumed without a relist.
    assert c.srv.count_requests(method="GET", path=path, watch=False) == 0


def test_an_expired_watch_gets_410_and_the_adapter_relists_and_converges(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    c.create("before")
    c.wait_assigned("default", "before")
    a.wait_synced()
    assert c.srv.wait_for_watchers(2, timeout=30)
    c.srv.hold_watches()
    c.set_config({"cidr-global": "192.0.2.0/24", "cidr-late": "198.51.100.0/24"})
    c.create("while-expired")
    c.srv.delete("services", "default", "before")
    c.srv.compact()
    c.srv.drop_watches()
    c.srv.release_watches()
    assert c.wait_assigned("default", "while-expired") == ["192.0.2.2"]
    wait_for(lambda: c.svc("default", "before") is None, "the deleted Service to go")
    c.wait_no_lease(owner("default", "before"))
    c.create("s", "late")
    assert c.wait_assigned("late", "s") == ["198.51.100.1"]
    c.barrier()
    assert c.srv.count_requests(method="GET", path="/api/v1/services", watch=False) >= 2, \
        "the adapter relisted"
    # Once converged, the adapter watches quietly: handling a few more Services takes
    # no request about the ConfigMap (a watch resumed from a version the server has
    # forgotten must not be retried from that same version over and over).
    c.srv.clear_request_log()
    for _ in range(3):
        c.barrier()
    cm = [r for r in c.srv.request_log() if "/configmaps" in r.path]
    assert cm == [], f"{len(cm)} ConfigMap requests while handling 3 Services: {cm[:6]}"


def test_a_conflicting_patch_is_retried_on_fresh_data(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    a.wait_synced()
    path = "/api/v1/namespaces/default/services/web"
    # The adapter's first PATCH is held while the object changes underneath it.
    release = c.srv.hold_requests(path_prefix=path, method="PATCH")
    c.create("web")
    assert c.srv.wait_for_requests(lambda log: any(r.method == "PATCH" and r.path == path
                                                   for r in log), timeout=30)
    c.patch("default", "web", {"metadata": {"labels": {"team": "blue"}},
                               "spec": {"ports": [{"name": "tcp-80", "protocol": "TCP",
                                                   "port": 80, "targetPort": 8080}]}})
    release.set()
    assert c.wait_assigned("default", "web") == ["192.0.2.1"]
    o = c.svc("default", "web")
    assert labels_of(o)["team"] == "blue", "the concurrent change is kept"
    assert o["spec"]["ports"][0]["targetPort"] == 8080
    assert c.srv.count_requests(method="PATCH", path=path) >= 2
    assert len(c.leases()) == 1

    # The same when letting go: the PATCH that removes the finalizer conflicts.
    patches = c.srv.count_requests(method="PATCH", path=path)
    release = c.srv.hold_requests(path_prefix=path, method="PATCH")
    c.srv.delete("services", "default", "web")
    assert c.srv.wait_for_requests(
        lambda log: sum(r.method == "PATCH" and r.path == path for r in log) > patches,
        timeout=30)
    c.patch("default", "web", {"metadata": {"labels": {"team": "green"}}})
    release.set()
    wait_for(lambda: c.svc("default", "web") is None, "the Service to be really deleted")
    c.wait_no_lease(owner("default", "web"))


def test_patches_that_fail_with_500_are_retried(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    a.wait_synced()
    c.srv.fail_next(2, code=500, method="PATCH", path_prefix="/api/v1/namespaces/default/"
                                                            "services/flaky")
    c.create("flaky")
    assert c.wait_assigned("default", "flaky") == ["192.0.2.1"]
    assert c.srv.count_requests(method="PATCH",
                                path="/api/v1/namespaces/default/services/flaky") >= 3
    # Events that cannot be posted do not hold anything up.
    c.srv.fail_next(4, code=500, method="POST", path_prefix="/api/v1/namespaces/quiet/events")
    c.create("s", "quiet")
    assert c.wait_assigned("quiet", "s") == ["192.0.2.2"]
    # A burst with failures sprinkled over it converges too.
    c.srv.fail_next(5, code=500, method="PATCH")
    names = [f"b-{i}" for i in range(10)]
    for n in names:
        c.create(n)
    for n in names:
        c.wait_assigned("default", n)
    assert_unique_and_leased(c, [("default", n) for n in ["flaky"] + names] +
                             [("quiet", "s")])


def test_a_service_whose_first_attempt_fails_hears_ensuring_then_one_warning_then_ensured(
        cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    a.wait_synced()
    path = "/api/v1/namespaces/default/services/slow"
    # The same failure twice: the retry says nothing new.
    c.srv.fail_next(2, code=500, method="PATCH", path_prefix=path, message="disk on fire")
    c.create("slow")
    assert c.wait_assigned("default", "slow") == ["192.0.2.1"]
    c.wait_event("default", "slow", "EnsuredLoadBalancer", "Normal", "192.0.2.1")
    assert c.srv.count_requests(method="PATCH", path=path) == 3
    summary = c.event_summary("default", "slow")
    assert [(t, r) for t, r, _ in summary] == [
        ("Normal", "EnsuringLoadBalancer"), ("Warning", "SyncLoadBalancerFailed"),
        ("Normal", "EnsuredLoadBalancer")], summary
    assert summary[0][2] == "Ensuring load balancer"
    assert "HTTP 500" in summary[1][2] and "disk on fire" in summary[1][2], summary
    assert summary[2][2] == "Ensured load balancer with 192.0.2.1"

    # A Service that must wait (no pool for its namespace) hears the same start.
    c.set_config({"cidr-default": "198.51.100.0/24"}, seen_by=a)
    c.create("stuck", "elsewhere")
    c.wait_event("elsewhere", "stuck", "SyncLoadBalancerFailed", "Warning",
                 "no address pool for namespace elsewhere")
    assert [(t, r) for t, r, _ in c.event_summary("elsewhere", "stuck")] == [
        ("Normal", "EnsuringLoadBalancer"), ("Warning", "SyncLoadBalancerFailed")]
    c.set_config({"cidr-default": "198.51.100.0/24", "cidr-elsewhere": "203.0.113.0/24"},
                 seen_by=a)
    assert c.wait_assigned("elsewhere", "stuck") == ["203.0.113.1"]
    c.wait_event("elsewhere", "stuck", "EnsuredLoadBalancer", "Normal", "203.0.113.1")
    assert [r for _, r, _ in c.event_summary("elsewhere", "stuck")] == [
        "EnsuringLoadBalancer", "SyncLoadBalancerFailed", "EnsuredLoadBalancer"]


# ------------------------------------------------------------------------------------
# hostile input


def test_garbage_in_the_annotation_gets_a_warning_and_the_adapter_keeps_serving(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    garbage = {"word": "not-an-ip", "two-v4": "192.0.2.10,192.0.2.11",
               "three": "192.0.2.10,2001:db8::1,192.0.2.12", "octets": "192.0.2.999",
               "long": "9" * 5000, "empty-items": ",,,", "unicode": "192.0.2.\u0661"}
    for name, value in garbage.items():
        c.create(name, annotations={ANN_IPS: value})
    for name, value in garbage.items():
        ev = c.wait_event("default", name, "SyncLoadBalancerFailed", "Warning")
        if len(value) < 100:
            assert value in ev["message"] or name in ("two-v4", "three"), ev["message"]
        assert c.lease(owner("default", name)) is None
    assert c.barrier() == ["192.0.2.1"]
    assert a.running()


def test_malformed_objects_are_logged_and_the_adapter_keeps_serving_others(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    a.wait_synced()
    assert c.srv.wait_for_watchers(2, timeout=30)
    put = c.srv.put_raw
    md = lambda name: {"name": name, "namespace": "default",  # noqa: E731
                       "uid": f"uid-{name}", "creationTimestamp": "2024-01-01T00:00:00Z"}
    put("default", "services", {"metadata": {"namespace": "default"},
                                "spec": {"type": "LoadBalancer"}}, name="nameless")
    put("default", "services", {"metadata": md("spec-string"), "spec": "LoadBalancer"})
    put("default", "services", {"metadata": md("wrong-types"),
                                "spec": {"type": "LoadBalancer", "ports": {"port": 80},
                                         "loadBalancerIP": 42, "ipFamilies": "IPv6",
                                         "ipFamilyPolicy": ["x"],
                                         "loadBalancerClass": 7},
                                "status": {"loadBalancer": {"ingress": "192.0.2.1"}}})
    put("default", "services", {"metadata": dict(md("meta-types"), annotations=["x"],
                                                 labels=5, finalizers="f"),
                                "spec": {"type": "LoadBalancer",
                                         "ports": [{"port": "80"}, None, 7]}})
    put("default", "services", {"metadata": "not-an-object"}, name="meta-string")
    a.wait_log(r"without a usable name")
    c.srv.inject_watch_line(b"this is not JSON\n", path_prefix="/api/v1/services")
    a.wait_log(r"malformed watch line")
    assert c.barrier()
    # A relist (after 410) reads the same garbage from the list.
    c.srv.compact()
    c.srv.drop_watches()
    c.create("after-relist")
    assert c.wait_assigned("default", "after-relist")
    assert c.barrier()
    assert a.running()


# ------------------------------------------------------------------------------------
# scale


def test_the_adapter_does_not_list_per_service(cluster):
    c = cluster
    c.set_config(GLOBAL)
    a = c.adapter()
    a.wait_synced()
    assert c.srv.wait_for_watchers(2, timeout=30)
    c.srv.clear_request_log()
    names = [f"s-{i}" for i in range(50)]
    for n in names:
        c.create(n)
    for n in names:
        c.wait_assigned("default", n)
    for n in names:
        c.wait_event("default", n, "EnsuredLoadBalancer")
    log = c.srv.request_log()
    lists = [r for r in log if r.method == "GET" and "watch=" not in r.query and
             (r.path.endswith("/services") or r.path.endswith("/configmaps"))]
    gets = [r for r in log if r.method == "GET" and r.path.count("/") >= 6]
    assert len(lists) <= 2, f"{len(lists)} LISTs during a burst of 50: {lists[:10]}"
    assert len(gets) <= 5, f"{len(gets)} single GETs during a burst of 50: {gets[:10]}"
    assert_unique_and_leased(c, [("default", n) for n in names])


def test_a_carried_address_inside_another_namespaces_pool_is_taken_from_that_pool(cluster):
    """Keys changed after a Service got its address: the address lies in another
    namespace's pool. It is held there, so that pool never hands it out again."""
    cluster.set_config({"cidr-a": "192.0.2.0/24", "range-b": "198.51.100.6-198.51.100.7"})
    cluster.adapter()
    cluster.create("first", "b")
    assert cluster.wait_assigned("b", "first") == ["198.51.100.6"]
    cluster.create("moved", "a", annotations={ANN_IPS: "198.51.100.7"})
    assert cluster.wait_assigned("a", "moved") == ["198.51.100.7"]
    lease = cluster.lease(owner("a", "moved"))
    assert lease is not None and list(lease.addresses) == ["198.51.100.7"]
    assert lease.pool == "k8s.range-b"
    assert cluster.warnings("a", "moved") == []
    cluster.create("second", "b")
    cluster.wait_event("b", "second", "SyncLoadBalancerFailed", "Warning", ["exhausted"])
    assert lease_addrs(cluster, "b", "second") is None
    assert ANN_IPS not in annotations_of(cluster.svc("b", "second"))


def test_write_status_costs_one_status_patch_per_service(cluster):
    cluster.set_config(GLOBAL)
    a = cluster.adapter(extra_args=["--write-status", "--metrics-listen", "127.0.0.1:0"])
    a.wait_synced()

    def wait_status(ns, n):
        ips = cluster.wait_assigned(ns, n)
        cluster.wait_svc(ns, n, lambda o: [
            i.get("ip") for i in ((o.get("status") or {}).get("loadBalancer") or {})
            .get("ingress", [])] == ips, "its status to carry the address")

    names = [f"s{i}" for i in range(5)]
    for n in names:
        cluster.create(n)
    for n in names:
        wait_status("default", n)
    # Two barriers, each waited for to its status: when the second is done,
    # the adapter has handled the watch's echoes of every write before it.
    for b in ("barrier-1", "barrier-2"):
        cluster.create(b, "barrier")
        wait_status("barrier", b)
    for n in names:
        path = f"/api/v1/namespaces/default/services/{n}"
        assert cluster.srv.count_requests(method="PATCH", path=path) == 1
        assert cluster.srv.count_requests(method="PATCH", path=path + "/status") == 1
    assert "HTTP 409" not in a.log() and " warn " not in a.log(), a.log()
    # The echoes of its own two writes (metadata, then status) cost no reconcile:
    # one per Service, the one its creation caused.
    # A reconcile is counted once its last write's response is read, which can be
    # just after the test API server shows the write: wait for the barrier's count.
    done_key = ("k8s_adapter_reconciles_total", frozenset({"result": "done"}.items()))
    s = wait_for(lambda: (lambda m: m if m.get(done_key, 0) >= len(names) + 2 else None)(
        scrape(a)), "the second barrier's reconcile to be counted")
    assert s[done_key] == len(names) + 2, s

