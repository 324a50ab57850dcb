"""The gRPC API of a real ipamd, driven by Debian's python3-grpcio.

Each test gets its own ipamd on a Unix socket and data directory (see conftest.py).
Only documentation address space is used: 192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24 and 2001:db8::/32.
"""

import ipaddress
import time

import grpc
import pytest

from ipam_client import StreamEnded

SC = grpc.StatusCode


def expect_status(code, fn, *args, **kwargs):
    """Calls fn, asserts it fails with status code; returns the grpc.RpcError."""
    try:
        result = fn(*args, **kwargs)
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()!r}"
        return e
    raise AssertionError(f"expected {code}, call succeeded with:\n{result}")


def expect_one_of(codes, fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except grpc.RpcError as e:
        assert e.code() in codes, f"expected one of {codes}, got {e.code()}: {e.details()!r}"
        return e
    raise AssertionError(f"expected one of {codes}, call succeeded with:\n{result}")


def ip(s):
    return ipaddress.ip_address(s)


def is_v4(s):
    return ip(s).version == 4


def is_v6(s):
    return ip(s).version == 6


def snapshot(client):
    """Everything visible: pools (with stats), leases, revision."""
    pools = client.ListPools()
    leases, _ = client.all_leases()
    return list(pools.pools), leases, pools.revision


# ---------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------

def test_apply_pool_creates_then_replaces_by_name(client, pb):
    r1 = client.apply_pool("web", ["192.0.2.0/24"])
    assert r1.created
    assert r1.changed
    created_rev = client.get_pool("web").create_revision
    rev = client.revision()

    r2 = client.apply_pool("web", ["192.0.2.0/24"])
    assert not r2.created
    assert not r2.changed, "applying an identical pool must report changed=false"
    assert client.revision() == rev, "an identical ApplyPool must not bump the revision"

    r3 = client.apply_pool("web", ["198.51.100.0/24"])
    assert not r3.created
    assert r3.changed
    pool = client.get_pool("web")
    assert list(pool.ranges) == ["198.51.100.0/24"]
    assert pool.create_revision == created_rev
    assert pool.revision > rev
    assert [p.name for p in client.ListPools().pools] == ["web"]

    r4 = client.apply_pool("web", ["198.51.100.0/24"], search_order=pb.ipam.SEARCH_ORDER_DESC)
    assert not r4.created and r4.changed
    assert client.get_pool("web").search_order == pb.ipam.SEARCH_ORDER_DESC


def test_list_pools_returns_pools_by_name(client):
    for name in ["charlie", "alpha", "bravo"]:
        client.apply_pool(name, ["192.0.2.0/24"])
    resp = client.ListPools()
    assert [p.name for p in resp.pools] == ["alpha", "bravo", "charlie"]
    assert resp.revision > 0


@pytest.mark.parametrize("name", ["a", "A-z_0.9", "pool.v1", "x" * 63])
def test_pool_names_of_the_allowed_alphabet_are_accepted(client, name):
    assert client.apply_pool(name, ["192.0.2.0/24"]).created
    assert client.get_pool(name).name == name


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 64, "pool!", "caf\u00e9", "a\nb", "a:b"])
def test_pool_names_outside_the_allowed_alphabet_are_invalid(client, name):
    expect_status(SC.INVALID_ARGUMENT, client.apply_pool, name, ["192.0.2.0/24"])
    assert list(client.ListPools().pools) == []


@pytest.mark.parametrize("bad", ["192.0.2.0/33", "192.0.2.9-192.0.2.1", "300.0.0.0/8",
                                 "192.0.2.1-2001:db8::1"])
def test_a_bad_block_is_invalid_names_the_entry_and_changes_nothing(client, bad):
    client.apply_pool("lan", ["192.0.2.0/24"])
    client.alloc("lan", "holder")
    before = snapshot(client)

    # Replacing an existing pool with a bad block.
    e = expect_status(SC.INVALID_ARGUMENT, client.apply_pool, "lan", ["198.51.100.0/24", bad])
    assert bad in e.details(), f"error {e.details()!r} does not name {bad!r}"
    # Creating a new pool with a bad block.
    e = expect_status(SC.INVALID_ARGUMENT, client.apply_pool, "other", [bad, "203.0.113.0/24"])
    assert bad in e.details(), f"error {e.details()!r} does not name {bad!r}"

    assert snapshot(client) == before
    expect_status(SC.NOT_FOUND, client.GetPool, name="other")


def test_get_pool_of_an_unknown_name_is_not_found_and_names_it(client):
    e = expect_status(SC.NOT_FOUND, client.GetPool, name="nosuchpool")
    assert "nosuchpool" in e.details()


@pytest.mark.parametrize("blocks, options, v4_total", [
    (["192.0.2.0/24"], {}, "256"),
    (["192.0.2.0/24"], {"skip_end_ips": True}, "254"),
    (["192.0.2.0/24"], {"avoid_buggy_ips": True}, "254"),
    (["192.0.2.0/31"], {"skip_end_ips": True}, "2"),
    (["192.0.2.7/32"], {"skip_end_ips": True}, "1"),
    (["192.0.2.0/30", "198.51.100.0/30"], {}, "8"),
])
def test_ipv4_pool_stats_count_addresses_as_decimal_strings(client, blocks, options, v4_total):
    client.apply_pool("p", blocks, **options)
    pool = client.get_pool("p")
    assert pool.ipv4.total == v4_total
    assert pool.ipv4.used == "0"
    assert pool.ipv4.free == v4_total
    assert pool.leases == 0


def test_an_ipv6_slash_64_counts_two_to_the_64_addresses(client):
    client.apply_pool("v6", ["2001:db8::/64"])
    pool = client.get_pool("v6")
    assert pool.ipv6.total == "18446744073709551616"
    assert pool.ipv6.used == "0"
    assert pool.ipv6.free == "18446744073709551616"
    assert list(pool.ranges) == ["2001:db8::/64"]

    client.alloc("v6", "one")
    pool = client.get_pool("v6")
    assert pool.ipv6.used == "1"
    assert pool.ipv6.free == "18446744073709551615"


def test_a_dual_pool_counts_each_family(client, pb):
    client.apply_pool("dual", ["192.0.2.0/24", "2001:db8::/120"])
    pool = client.get_pool("dual")
    assert (pool.ipv4.total, pool.ipv6.total) == ("256", "256")
    client.alloc("dual", "a", family=pb.ipam.FAMILY_REQUIRE_DUAL_STACK)
    pool = client.get_pool("dual")
    assert (pool.ipv4.used, pool.ipv4.free) == ("1", "255")
    assert (pool.ipv6.used, pool.ipv6.free) == ("1", "255")
    assert pool.leases == 1


def test_one_allocation_is_counted_as_used(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    client.alloc("p", "one")
    pool = client.get_pool("p")
    assert pool.ipv4.total == "256"
    assert pool.ipv4.used == "1"
    assert pool.ipv4.free == "255"
    assert pool.leases == 1


@pytest.mark.parametrize("blocks, ranges", [
    (["192.0.2.0/24"], ["192.0.2.0/24"]),
    (["192.0.2.0/25", "192.0.2.128/25"], ["192.0.2.0/24"]),
    (["192.0.2.128/25", "192.0.2.0/25"], ["192.0.2.0/24"]),
    (["192.0.2.0/24", "192.0.2.10-192.0.2.20"], ["192.0.2.0/24"]),
    (["192.0.2.0-192.0.2.127", "192.0.2.100-192.0.2.255"], ["192.0.2.0/24"]),
    (["198.51.100.0/24", "192.0.2.0/24"], ["192.0.2.0/24", "198.51.100.0/24"]),
])
def test_pool_ranges_list_the_merged_address_set(client, blocks, ranges):
    client.apply_pool("p", blocks)
    pool = client.get_pool("p")
    assert list(pool.ranges) == ranges
    assert list(pool.blocks) == blocks


def test_a_dhcp_pool_gives_every_owner_0_0_0_0(client):
    client.apply_pool("dhcp", ["0.0.0.0/32"])
    assert client.get_pool("dhcp").dhcp
    assert client.addresses("dhcp", "a") == ["0.0.0.0"]
    assert client.addresses("dhcp", "b") == ["0.0.0.0"]
    assert client.addresses("dhcp", "c") == ["0.0.0.0"]


def test_an_ordinary_pool_is_not_dhcp(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    assert not client.get_pool("p").dhcp


# ---------------------------------------------------------------------------
# DeletePool
# ---------------------------------------------------------------------------

def test_deleting_a_pool_with_leases_needs_force(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    client.apply_pool("keep", ["198.51.100.0/24"])
    client.alloc("p", "a")
    client.alloc("p", "b")
    client.alloc("keep", "c")
    before = snapshot(client)

    expect_status(SC.FAILED_PRECONDITION, client.DeletePool, name="p")
    assert snapshot(client) == before

    resp = client.DeletePool(name="p", force=True)
    assert resp.released_leases == 2
    expect_status(SC.NOT_FOUND, client.GetPool, name="p")
    expect_status(SC.NOT_FOUND, client.GetLease, owner="a")
    expect_status(SC.NOT_FOUND, client.GetLease, owner="b")
    leases, _ = client.all_leases()
    assert [le.owner for le in leases] == ["c"]


def test_deleting_an_empty_pool_needs_no_force(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    assert client.DeletePool(name="p").released_leases == 0
    expect_status(SC.NOT_FOUND, client.GetPool, name="p")
    assert list(client.ListPools().pools) == []


def test_deleting_an_unknown_pool_is_not_found(client):
    expect_status(SC.NOT_FOUND, client.DeletePool, name="nosuchpool")
    expect_status(SC.NOT_FOUND, client.DeletePool, name="nosuchpool", force=True)


# ---------------------------------------------------------------------------
# Allocate
# ---------------------------------------------------------------------------

def test_allocating_from_an_unknown_pool_is_not_found(client):
    expect_status(SC.NOT_FOUND, client.Allocate, pool="nosuchpool", owner="a")


@pytest.mark.parametrize("owner", ["", "a b", " a", "a\tb", "a\nb", "x" * 254])
def test_a_bad_owner_is_invalid(client, owner):
    client.apply_pool("p", ["192.0.2.0/24"])
    expect_status(SC.INVALID_ARGUMENT, client.Allocate, pool="p", owner=owner)
    assert client.all_leases()[0] == []


@pytest.mark.parametrize("owner", ["a", "k8s/default/web", "x" * 253, "vm:42@lab#1"])
def test_printable_owners_without_spaces_are_accepted(client, owner):
    client.apply_pool("p", ["192.0.2.0/24"])
    lease = client.alloc("p", owner)
    assert lease.owner == owner
    assert client.GetLease(owner=owner).lease == lease


def test_a_new_lease_carries_what_was_asked(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    before = int(time.time())
    resp = client.Allocate(pool="p", owner="web", labels={"app": "web", "tier": "front"})
    after = int(time.time())
    lease = resp.lease
    assert resp.created
    assert lease.owner == "web"
    assert lease.pool == "p"
    assert list(lease.addresses) == ["192.0.2.0"]
    assert dict(lease.labels) == {"app": "web", "tier": "front"}
    assert lease.ttl_seconds == 0
    assert lease.expire_time == 0
    assert before - 1 <= lease.create_time <= after + 1
    assert lease.create_revision == lease.revision > 0
    assert client.GetLease(owner="web").lease == lease


def test_allocating_again_for_the_same_owner_returns_the_same_lease(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    first = client.Allocate(pool="p", owner="a")
    assert first.created
    rev = client.revision()
    again = client.Allocate(pool="p", owner="a")
    assert not again.created
    assert again.lease == first.lease
    # Asking for the address it already holds is compatible too.
    same = client.Allocate(pool="p", owner="a", addresses=list(first.lease.addresses))
    assert not same.created
    assert same.lease == first.lease
    assert client.revision() == rev
    assert client.get_pool("p").ipv4.used == "1"
    assert len(client.all_leases()[0]) == 1


def test_the_same_owner_with_an_incompatible_request_fails_its_precondition(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    client.apply_pool("q", ["198.51.100.0/24"])
    lease = client.alloc("p", "a")
    before = snapshot(client)
    expect_status(SC.FAILED_PRECONDITION, client.Allocate, pool="q", owner="a")
    expect_status(SC.FAILED_PRECONDITION, client.Allocate, pool="p", owner="a",
                  addresses=["192.0.2.77"])
    assert snapshot(client) == before
    assert client.GetLease(owner="a").lease == lease


@pytest.mark.parametrize("options, expected", [
    ({}, ["192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3"]),
    ({"search_order": 1}, ["192.0.2.3", "192.0.2.2", "192.0.2.1", "192.0.2.0"]),
    ({"skip_end_ips": True}, ["192.0.2.1", "192.0.2.2"]),
    ({"skip_end_ips": True, "search_order": 1}, ["192.0.2.2", "192.0.2.1"]),
])
def test_allocation_takes_the_first_free_address_in_search_order(client, options, expected):
    client.apply_pool("p", ["192.0.2.0/30"], **options)
    got = [client.addresses("p", f"o{i}")[0] for i in range(len(expected))]
    assert got == expected
    expect_status(SC.RESOURCE_EXHAUSTED, client.Allocate, pool="p", owner="late")
    assert client.GetLease(owner="o0")  # earlier leases are intact
    expect_status(SC.NOT_FOUND, client.GetLease, owner="late")


@pytest.mark.parametrize("order, expected", [
    (0, ["192.0.2.254", "198.51.100.1"]),
    (1, ["198.51.100.1", "192.0.2.254"]),
])
def test_avoid_buggy_ips_never_hands_out_dot_0_or_dot_255(client, order, expected):
    client.apply_pool("p", ["192.0.2.254-192.0.2.255", "198.51.100.0-198.51.100.1"],
                      avoid_buggy_ips=True, search_order=order)
    assert client.get_pool("p").ipv4.total == "2"
    got = [client.addresses("p", f"o{i}")[0] for i in range(2)]
    assert got == expected
    expect_status(SC.RESOURCE_EXHAUSTED, client.Allocate, pool="p", owner="late")


def test_avoid_buggy_ips_on_a_slash_24_hands_out_254_addresses(client):
    client.apply_pool("p", ["203.0.113.0/24"], avoid_buggy_ips=True)
    got = set()
    for i in range(254):
        got.add(client.addresses("p", f"o{i:03d}")[0])
    assert len(got) == 254
    assert "203.0.113.0" not in got and "203.0.113.255" not in got
    expect_status(SC.RESOURCE_EXHAUSTED, client.Allocate, pool="p", owner="late")


def test_a_free_requested_address_inside_the_pool_is_granted(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    assert client.addresses("p", "a", addresses=["192.0.2.77"]) == ["192.0.2.77"]
    # The first free address search skips it later on.
    client.apply_pool("small", ["192.0.2.77-192.0.2.78"])
    assert client.addresses("small", "b") == ["192.0.2.78"]


def test_a_requested_address_held_by_another_owner_already_exists(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    client.alloc("p", "a", addresses=["192.0.2.10"])
    before = snapshot(client)
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="p", owner="b",
                  addresses=["192.0.2.10"])
    assert snapshot(client) == before


def test_a_requested_address_outside_the_pool_is_invalid(client):
    client.apply_pool("p", ["192.0.2.0/25"])
    client.apply_pool("q", ["198.51.100.0/24"])
    expect_status(SC.INVALID_ARGUMENT, client.Allocate, pool="p", owner="a",
                  addresses=["192.0.2.200"])
    expect_status(SC.INVALID_ARGUMENT, client.Allocate, pool="p", owner="a",
                  addresses=["198.51.100.1"])
    assert client.all_leases()[0] == []


@pytest.mark.parametrize("bad", ["192.0.2.300", "192.0.2", "not-an-ip", "192.0.2.0/24",
                                 "2001:db8::g"])
def test_a_malformed_requested_address_is_invalid_and_named(client, bad):
    client.apply_pool("p", ["192.0.2.0/24", "2001:db8::/64"])
    e = expect_status(SC.INVALID_ARGUMENT, client.Allocate, pool="p", owner="a",
                      addresses=[bad])
    assert bad in e.details(), f"error {e.details()!r} does not name {bad!r}"
    assert client.all_leases()[0] == []


def test_two_requested_addresses_of_one_family_are_invalid(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    expect_status(SC.INVALID_ARGUMENT, client.Allocate, pool="p", owner="a",
                  addresses=["192.0.2.1", "192.0.2.2"])
    assert client.all_leases()[0] == []


@pytest.mark.parametrize("port", [
    {"protocol": "TCP", "port": 0},
    {"protocol": "TCP", "port": 65536},
    {"protocol": "ICMP", "port": 80},
    {"protocol": "", "port": 80},
])
def test_a_bad_port_is_invalid(client, port):
    client.apply_pool("p", ["192.0.2.0/24"])
    expect_status(SC.INVALID_ARGUMENT, client.Allocate, pool="p", owner="a", ports=[port])
    assert client.all_leases()[0] == []


def test_overlapping_pools_in_one_space_never_hand_out_an_address_twice(client):
    client.apply_pool("small", ["192.0.2.0/30"])
    client.apply_pool("big", ["192.0.2.0/29"])
    small = [client.addresses("small", f"s{i}")[0] for i in range(4)]
    big = [client.addresses("big", f"b{i}")[0] for i in range(4)]
    assert small == ["192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert big == ["192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7"]
    expect_status(SC.RESOURCE_EXHAUSTED, client.Allocate, pool="big", owner="late")
    expect_status(SC.RESOURCE_EXHAUSTED, client.Allocate, pool="small", owner="late")
    # A requested address held through the other pool is taken.
    client.Release(owner="b0")
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="big", owner="x",
                  addresses=["192.0.2.1"])
    # "used" counts leases of the space, whichever pool they came from.
    assert client.get_pool("big").ipv4.used == "7"
    assert client.get_pool("small").ipv4.used == "4"


def test_a_different_space_may_reuse_an_address(client):
    client.apply_pool("a", ["192.0.2.0/30"])
    client.apply_pool("b", ["192.0.2.0/30"], space="lab")
    assert client.addresses("a", "one") == ["192.0.2.0"]
    assert client.addresses("b", "two") == ["192.0.2.0"]
    assert client.addresses("b", "three", addresses=["192.0.2.1"]) == ["192.0.2.1"]
    assert client.addresses("a", "four", addresses=["192.0.2.1"]) == ["192.0.2.1"]
    assert client.get_pool("b").space == "lab"


def test_a_static_reservation_outside_every_pool_is_honoured_by_pools(client, pb):
    resp = client.Allocate(pool="", owner="static", addresses=["198.51.100.7"])
    assert resp.created
    assert resp.lease.pool == ""
    assert list(resp.lease.addresses) == ["198.51.100.7"]
    assert client.GetLease(owner="static").lease == resp.lease

    client.apply_pool("p", ["198.51.100.0/29"], search_order=pb.ipam.SEARCH_ORDER_DESC)
    assert client.addresses("p", "a") == ["198.51.100.6"]
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="p", owner="b",
                  addresses=["198.51.100.7"])
    pool = client.get_pool("p")
    assert pool.ipv4.used == "2"  # the reservation lies in the pool's space
    assert pool.leases == 1


def test_concurrent_allocations_get_distinct_addresses(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    futures = [client.Allocate.future(pool="p", owner=f"c{i:03d}") for i in range(100)]
    responses = [f.result(timeout=30) for f in futures]
    assert all(r.created for r in responses)
    addrs = [r.lease.addresses[0] for r in responses]
    assert len(set(addrs)) == 100
    assert sorted(addrs, key=ip) == [f"192.0.2.{i}" for i in range(100)]
    assert client.get_pool("p").ipv4.used == "100"


def test_concurrent_retries_of_one_owner_get_one_lease(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    futures = [client.Allocate.future(pool="p", owner="same") for _ in range(20)]
    responses = [f.result(timeout=30) for f in futures]
    assert sum(r.created for r in responses) == 1
    assert len({r.lease.SerializeToString(deterministic=True) for r in responses}) == 1
    assert client.get_pool("p").ipv4.used == "1"


# ---------------------------------------------------------------------------
# Release
# ---------------------------------------------------------------------------

def test_releasing_a_lease_returns_it_and_frees_its_address(client):
    client.apply_pool("p", ["192.0.2.0/30"])
    lease = client.alloc("p", "a")
    resp = client.Release(owner="a")
    assert resp.lease.owner == "a"
    assert list(resp.lease.addresses) == list(lease.addresses)
    expect_status(SC.NOT_FOUND, client.GetLease, owner="a")
    assert client.get_pool("p").ipv4.used == "0"
    assert client.addresses("p", "b") == list(lease.addresses)


@pytest.mark.parametrize("method", ["Release", "Renew", "GetLease"])
def test_an_owner_without_a_lease_is_not_found(client, method):
    expect_status(SC.NOT_FOUND, getattr(client, method), owner="nobody")


# ---------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------

@pytest.fixture
def dual(client):
    client.apply_pool("dual", ["192.0.2.0/24", "2001:db8::/64"])
    return "dual"


def test_an_unspecified_family_on_a_dual_pool_gives_ipv4(client, dual):
    addrs = client.addresses(dual, "a")
    assert len(addrs) == 1 and is_v4(addrs[0])


def test_an_unspecified_family_on_an_ipv6_pool_gives_ipv6(client):
    client.apply_pool("v6", ["2001:db8:5::/120"])
    assert client.addresses("v6", "a") == ["2001:db8:5::"]


def test_family_ipv6_on_a_dual_pool_gives_one_ipv6_address(client, pb, dual):
    addrs = client.addresses(dual, "a", family=pb.ipam.FAMILY_IPV6)
    assert len(addrs) == 1
    assert ip(addrs[0]) in ipaddress.ip_network("2001:db8::/64")


def test_family_ipv4_on_a_dual_pool_gives_one_ipv4_address(client, pb, dual):
    addrs = client.addresses(dual, "a", family=pb.ipam.FAMILY_IPV4)
    assert addrs == ["192.0.2.0"]


def test_require_dual_stack_gives_ipv4_then_ipv6(client, pb, dual):
    addrs = client.addresses(dual, "a", family=pb.ipam.FAMILY_REQUIRE_DUAL_STACK)
    assert len(addrs) == 2
    assert is_v4(addrs[0]) and is_v6(addrs[1])


def test_require_dual_stack_with_ipv6_primary_gives_ipv6_first(client, pb, dual):
    addrs = client.addresses(dual, "a", family=pb.ipam.FAMILY_REQUIRE_DUAL_STACK,
                             primary_family=pb.ipam.FAMILY_IPV6)
    assert len(addrs) == 2
    assert is_v6(addrs[0]) and is_v4(addrs[1])


def test_prefer_dual_stack_on_a_dual_pool_gives_both(client, pb, dual):
    addrs = client.addresses(dual, "a", family=pb.ipam.FAMILY_PREFER_DUAL_STACK)
    assert len(addrs) == 2
    assert is_v4(addrs[0]) and is_v6(addrs[1])


def test_requested_addresses_of_both_families_are_granted_together(client, dual):
    addrs = client.addresses(dual, "a", addresses=["192.0.2.9", "2001:db8::9"])
    assert set(addrs) == {"192.0.2.9", "2001:db8::9"}


def test_require_dual_stack_on_an_ipv4_pool_fails_and_holds_nothing(client, pb):
    client.apply_pool("v4", ["192.0.2.0/24"])
    expect_one_of({SC.RESOURCE_EXHAUSTED, SC.FAILED_PRECONDITION}, client.Allocate,
                  pool="v4", owner="a", family=pb.ipam.FAMILY_REQUIRE_DUAL_STACK)
    assert client.all_leases()[0] == []
    assert client.get_pool("v4").ipv4.used == "0"


def test_prefer_dual_stack_on_an_ipv4_pool_gives_just_ipv4(client, pb):
    client.apply_pool("v4", ["192.0.2.0/24"])
    addrs = client.addresses("v4", "a", family=pb.ipam.FAMILY_PREFER_DUAL_STACK)
    assert addrs == ["192.0.2.0"]


def test_require_dual_stack_with_ipv6_exhausted_holds_no_ipv4_either(client, pb):
    client.apply_pool("dual", ["192.0.2.0/24", "2001:db8::/127"])
    for owner in ["six-a", "six-b"]:
        client.alloc("dual", owner, family=pb.ipam.FAMILY_IPV6)
    before = snapshot(client)
    expect_status(SC.RESOURCE_EXHAUSTED, client.Allocate, pool="dual", owner="both",
                  family=pb.ipam.FAMILY_REQUIRE_DUAL_STACK)
    assert snapshot(client) == before
    assert client.get_pool("dual").ipv4.used == "0"
    assert client.addresses("dual", "four", family=pb.ipam.FAMILY_IPV4) == ["192.0.2.0"]


# ---------------------------------------------------------------------------
# TTL and Renew
# ---------------------------------------------------------------------------

def test_a_lease_with_a_ttl_has_an_expiry_time(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    lease = client.alloc("p", "a", ttl_seconds=3600)
    assert lease.ttl_seconds == 3600
    assert lease.create_time + 3599 <= lease.expire_time <= lease.create_time + 3601


def wait_until_gone(client, owner, within, what):
    """Polls GetLease until owner's lease is NOT_FOUND; fails with what after within s."""
    deadline = time.monotonic() + within
    while True:
        try:
            client.GetLease(owner=owner)
        except grpc.RpcError as e:
            assert e.code() == SC.NOT_FOUND, f"{e.code()}: {e.details()}"
            return
        assert time.monotonic() < deadline, what
        time.sleep(0.1)  # polling interval of a bounded loop


def test_an_expired_lease_disappears_by_itself(client):
    client.apply_pool("p", ["192.0.2.0/30"])
    # The lease that stays is taken first, so it owns the first address however
    # slowly this runs (under valgrind "short" may be due before a second call).
    forever = client.alloc("p", "forever")
    lease = client.alloc("p", "short", ttl_seconds=1)
    assert lease.expire_time > 0
    assert list(lease.addresses) != list(forever.addresses)
    wait_until_gone(client, "short", 10, "a lease with ttl 1s still exists after 10s")
    assert client.get_pool("p").ipv4.used == "1"
    assert client.GetLease(owner="forever")
    # Its address is free again.
    assert client.addresses("p", "next") == list(lease.addresses)


def test_expiry_is_watched_as_lease_deleted_expired(client, pb):
    client.apply_pool("p", ["192.0.2.0/24"])
    with client.Watch(from_revision=0) as watch:
        header = watch.header()
        assert header.created
        lease = client.alloc("p", "short", ttl_seconds=1)
        ev = watch.wait_event(lambda e: e.type == pb.ipam.Event.LEASE_DELETED, timeout=10)
        assert ev.lease.owner == "short"
        assert ev.reason == "expired"
        assert ev.revision > lease.revision
    expect_status(SC.NOT_FOUND, client.GetLease, owner="short")


def test_renew_pushes_the_expiry_out(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    lease = client.alloc("p", "a", ttl_seconds=100)
    renewed = client.Renew(owner="a", ttl_seconds=1000).lease
    assert renewed.expire_time >= lease.expire_time + 899
    assert renewed.revision > lease.revision
    assert list(renewed.addresses) == list(lease.addresses)
    assert client.GetLease(owner="a").lease.expire_time == renewed.expire_time
    # ttl 0 renews by the lease's own ttl.  Whether an explicit ttl also becomes the
    # lease's own ttl is not part of the contract: accept either, consistently.
    assert renewed.ttl_seconds in (100, 1000)
    before = int(time.time())
    again = client.Renew(owner="a").lease
    after = int(time.time())
    assert again.ttl_seconds == renewed.ttl_seconds
    assert before - 1 + renewed.ttl_seconds <= again.expire_time <= after + 1 + renewed.ttl_seconds


@pytest.mark.parametrize("ttl", [315360001, 4294967295])
def test_a_ttl_over_ten_years_is_invalid(client, ttl):
    client.apply_pool("p", ["192.0.2.0/24"])
    expect_status(SC.INVALID_ARGUMENT, client.Allocate, pool="p", owner="a", ttl_seconds=ttl)
    assert client.all_leases()[0] == []


def test_a_ttl_of_exactly_ten_years_is_accepted(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    lease = client.alloc("p", "a", ttl_seconds=315360000)
    assert lease.expire_time >= lease.create_time + 315360000 - 1


# ---------------------------------------------------------------------------
# Sharing
# ---------------------------------------------------------------------------

def tcp(port):
    return {"protocol": "TCP", "port": port}


def udp(port):
    return {"protocol": "UDP", "port": port}


def test_an_allow_share_pool_shares_addresses_between_disjoint_ports(client):
    client.apply_pool("shared", ["192.0.2.0/24"], allow_share=True)
    addr = client.addresses("shared", "a", ports=[tcp(80)])
    assert client.addresses("shared", "b", ports=[tcp(443)], addresses=addr) == addr
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="shared", owner="c",
                  ports=[tcp(80)], addresses=addr)
    # The protocol counts: UDP/80 is disjoint from TCP/80.
    assert client.addresses("shared", "d", ports=[udp(80)], addresses=addr) == addr
    # A lease without ports never shares.
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="shared", owner="e",
                  addresses=addr)
    assert client.get_pool("shared").ipv4.used == "1"
    assert client.get_pool("shared").leases == 3


def test_a_lease_without_ports_is_never_shared(client):
    client.apply_pool("shared", ["192.0.2.0/24"], allow_share=True)
    addr = client.addresses("shared", "a")
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="shared", owner="b",
                  ports=[tcp(443)], addresses=addr)


def test_protocol_names_are_case_insensitive(client):
    client.apply_pool("shared", ["192.0.2.0/24"], allow_share=True)
    addr = client.addresses("shared", "a", ports=[{"protocol": "tcp", "port": 80}])
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="shared", owner="b",
                  ports=[tcp(80)], addresses=addr)
    assert client.addresses("shared", "c", ports=[{"protocol": "Udp", "port": 80}],
                            addresses=addr) == addr


def test_a_shared_address_is_freed_only_by_its_last_holder(client):
    client.apply_pool("shared", ["192.0.2.0/30"], allow_share=True)
    addr = client.addresses("shared", "a", ports=[tcp(80)])
    client.alloc("shared", "b", ports=[tcp(443)], addresses=addr)
    client.Release(owner="a")
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="shared", owner="c",
                  addresses=addr)
    client.Release(owner="b")
    assert client.addresses("shared", "c", addresses=addr) == addr


def test_the_same_sharing_key_shares_without_allow_share(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    addr = client.addresses("p", "a", ports=[tcp(80)], sharing_key="k1")
    assert client.addresses("p", "b", ports=[tcp(443)], sharing_key="k1",
                            addresses=addr) == addr
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="p", owner="c",
                  ports=[tcp(8080)], sharing_key="k2", addresses=addr)
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="p", owner="d",
                  ports=[tcp(8081)], addresses=addr)
    # Same key but overlapping ports.
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="p", owner="e",
                  ports=[tcp(80)], sharing_key="k1", addresses=addr)


def test_without_allow_share_or_a_key_disjoint_ports_do_not_share(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    addr = client.addresses("p", "a", ports=[tcp(80)])
    expect_status(SC.ALREADY_EXISTS, client.Allocate, pool="p", owner="b",
                  ports=[tcp(443)], addresses=addr)


# ---------------------------------------------------------------------------
# ListLeases
# ---------------------------------------------------------------------------

def test_list_leases_returns_leases_in_owner_order(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    owners = ["m", "k8s/b", "a", "z", "k8s/a", "B", "a.1"]
    for o in owners:
        client.alloc("p", o)
    resp = client.ListLeases()
    assert [le.owner for le in resp.leases] == sorted(owners)
    assert resp.next_page_token == ""
    assert resp.revision == client.revision()


def test_list_leases_filters_by_pool_owner_prefix_and_labels(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    client.apply_pool("q", ["198.51.100.0/24"])
    client.alloc("p", "k8s/default/web", labels={"app": "web", "env": "prod"})
    client.alloc("p", "k8s/default/db", labels={"app": "db", "env": "prod"})
    client.alloc("q", "k8s/kube-system/dns", labels={"app": "dns", "env": "prod"})
    client.alloc("q", "vm/1", labels={"app": "web", "env": "test"})

    def owners(**filters):
        return [le.owner for le in client.all_leases(**filters)[0]]

    assert owners(pool="p") == ["k8s/default/db", "k8s/default/web"]
    assert owners(pool="q") == ["k8s/kube-system/dns", "vm/1"]
    assert owners(owner_prefix="k8s/") == ["k8s/default/db", "k8s/default/web",
                                           "k8s/kube-system/dns"]
    assert owners(owner_prefix="k8s/default/") == ["k8s/default/db", "k8s/default/web"]
    assert owners(labels={"app": "web"}) == ["k8s/default/web", "vm/1"]
    assert owners(labels={"app": "web", "env": "prod"}) == ["k8s/default/web"]
    assert owners(labels={"env": "prod"}, pool="q") == ["k8s/kube-system/dns"]
    assert owners(pool="q", owner_prefix="vm/", labels={"env": "test"}) == ["vm/1"]
    assert owners(owner_prefix="nobody") == []
    assert owners(labels={"app": "none"}) == []


def test_list_leases_pages_yield_every_lease_exactly_once(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    owners = sorted(f"owner-{i:02d}" for i in range(7))
    for o in reversed(owners):
        client.alloc("p", o)
    seen, token, pages = [], "", 0
    while True:
        resp = client.ListLeases(page_size=2, page_token=token)
        pages += 1
        assert len(resp.leases) <= 2
        assert resp.revision > 0
        seen.extend(le.owner for le in resp.leases)
        token = resp.next_page_token
        if not token:
            break
        assert pages < 20, "pagination does not end"
    assert seen == owners
    assert pages >= 4


def test_list_leases_pages_survive_changes_between_pages(client):
    client.apply_pool("p", ["192.0.2.0/24"])
    for o in ["a", "b", "c", "d", "e", "f"]:
        client.alloc("p", o)
    first = client.ListLeases(page_size=2)
    assert [le.owner for le in first.leases] == ["a", "b"]
    client.Release(owner="a")
    client.alloc("p", "bb")
    rest, token = [], first.next_page_token
    for _ in range(20):
        resp = client.ListLeases(page_size=2, page_token=token)
        rest.extend(le.owner for le in resp.leases)
        token = resp.next_page_token
        if not token:
            break
    assert not token
    # Leases after the page boundary are listed once each, in order.
    assert rest[-4:] == ["c", "d", "e", "f"]
    assert len(rest) == len(set(rest))


# ---------------------------------------------------------------------------
# Watch
# ---------------------------------------------------------------------------

def test_watch_starts_with_the_current_revision_then_streams_changes(client, pb):
    Ev = pb.ipam.Event
    client.apply_pool("p", ["192.0.2.0/24"])
    current = client.revision()
    with client.Watch(from_revision=0) as watch:
        header = watch.header()
        assert header.created
        assert header.revision == current
        assert list(header.events) == []

        pool_rev = client.apply_pool("q", ["198.51.100.0/24"]).pool.revision
        lease = client.alloc("q", "a")
        client.Release(owner="a")
        client.DeletePool(name="q")

        events = watch.take_events(4)
    kinds = [(Ev.Type.Name(e.type), e.reason) for e in events]
    assert [k for k, _ in kinds] == ["POOL_PUT", "LEASE_PUT", "LEASE_DELETED", "POOL_DELETED"]
    assert kinds[1][1] == "allocated"
    assert kinds[2][1] == "released"
    assert events[0].pool.name == "q"
    assert events[0].revision == pool_rev
    assert events[1].lease.owner == "a"
    assert list(events[1].lease.addresses) == list(lease.addresses)
    assert events[1].revision == lease.revision
    assert events[2].lease.owner == "a"
    assert events[3].pool.name == "q"
    revs = [e.revision for e in events]
    assert revs == sorted(revs) and len(set(revs)) == 4
    assert revs[0] > current


def test_watch_streams_a_force_delete_as_lease_and_pool_deletions(client, pb):
    Ev = pb.ipam.Event
    client.apply_pool("p", ["192.0.2.0/24"])
    client.alloc("p", "a")
    client.alloc("p", "b")
    with client.Watch(from_revision=0) as watch:
        watch.header()
        assert client.DeletePool(name="p", force=True).released_leases == 2
        events = watch.take_events(3)
    deleted = sorted(e.lease.owner for e in events if e.type == Ev.LEASE_DELETED)
    assert deleted == ["a", "b"]
    assert [e.pool.name for e in events if e.type == Ev.POOL_DELETED] == ["p"]
    revs = [e.revision for e in events]
    assert revs == sorted(revs) and len(set(revs)) == 3
    assert client.revision() == revs[-1]


def test_watch_streams_a_renewal_as_lease_put_renewed(client, pb):
    client.apply_pool("p", ["192.0.2.0/24"])
    client.alloc("p", "a", ttl_seconds=100)
    with client.Watch(from_revision=0) as watch:
        watch.header()
        renewed = client.Renew(owner="a", ttl_seconds=500).lease
        ev = watch.next_event()
    assert ev.type == pb.ipam.Event.LEASE_PUT
    assert ev.reason == "renewed"
    assert ev.lease.owner == "a"
    assert ev.lease.expire_time == renewed.expire_time
    assert ev.revision == renewed.revision


def test_watch_does_not_replay_history_from_revision_0(client, pb):
    client.apply_pool("p", ["192.0.2.0/24"])
    client.alloc("p", "old")
    with client.Watch(from_revision=0) as watch:
        watch.header()
        new = client.alloc("p", "new")
        ev = watch.next_event()
    assert ev.lease.owner == "new"
    assert ev.revision == new.revision


def test_watch_from_a_revision_replays_from_that_revision_inclusive(client, pb):
    Ev = pb.ipam.Event
    client.apply_pool("p", ["192.0.2.0/24"])
    revs = [client.alloc("p", o).revision for o in ["x", "y", "z"]]
    current = client.revision()
    with client.Watch(from_revision=revs[0]) as watch:
        header = watch.header()
        assert header.created
        assert header.revision == current
        events = watch.take_events(3)
        # Then live events follow.
        later = client.alloc("p", "w")
        live = watch.next_event()
    assert [e.revision for e in events] == revs
    assert [e.lease.owner for e in events] == ["x", "y", "z"]
    assert all(e.type == Ev.LEASE_PUT for e in events)
    assert live.lease.owner == "w" and live.revision == later.revision


def test_watch_from_an_old_revision_after_a_restart_is_out_of_range(ipamd, client):
    client.apply_pool("p", ["192.0.2.0/24"])
    for o in ["a", "b", "c"]:
        client.alloc("p", o)
    client.Release(owner="b")
    assert client.revision() > 1
    ipamd.restart()
    with client.Watch(from_revision=1) as watch:
        e = watch.wait_error()
    assert e.code() == SC.OUT_OF_RANGE, f"{e.code()}: {e.details()}"


def test_ipamd_exits_cleanly_on_sigterm_with_a_watch_open(ipamd, client):
    watch = client.Watch(from_revision=0)
    watch.header()
    ipamd.stop(close_client=False)  # asserts exit code 0 within the timeout
    try:
        watch.wait_error(timeout=10)
    except StreamEnded:
        pass  # a clean end of stream is fine too
    finally:
        watch.close()


# ---------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("service", ["", "ipam.v1.Ipam"])
def test_health_check_reports_serving(client, pb, service):
    resp = client.health.Check(service=service)
    assert resp.status == pb.health.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(client):
    expect_status(SC.NOT_FOUND, client.health.Check, service="no.such.Service")


def test_health_watch_streams_serving_first(client, pb):
    with client.health.Watch(service="") as stream:
        first = stream.next()
    assert first.status == pb.health.HealthCheckResponse.SERVING


# ---------------------------------------------------------------------------
# Protocol robustness
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/ipam.v1.Ipam/Nope", "/no.such.Service/Call",
                                  "/grpc.health.v1.Health/Nope"])
def test_an_unknown_method_is_unimplemented(client, path):
    expect_status(SC.UNIMPLEMENTED, client.raw_unary, path, b"")


@pytest.mark.parametrize("path", ["/ipam.v1.Ipam/Allocate", "/ipam.v1.Ipam/ApplyPool",
                                  "/ipam.v1.Ipam/ListLeases", "/grpc.health.v1.Health/Check"])
@pytest.mark.parametrize("payload", [b"\x0a\xff", b"\x0a\x05ab", b"\xff\xff\xff"])
def test_a_garbage_payload_is_invalid_and_harmless(client, pb, path, payload):
    client.apply_pool("p", ["192.0.2.0/24"])
    before = snapshot(client)
    expect_status(SC.INVALID_ARGUMENT, client.raw_unary, path, payload)
    assert client.health.Check(service="").status == pb.health.HealthCheckResponse.SERVING
    assert snapshot(client) == before
    assert client.alloc("p", "after").addresses


def test_a_garbage_watch_request_is_invalid(client):
    call = client.channel.unary_stream("/ipam.v1.Ipam/Watch", request_serializer=None,
                                       response_deserializer=None)
    from ipam_client import StreamReader
    with StreamReader(call(b"\x08\xff", timeout=10)) as stream:
        e = stream.wait_error()
    assert e.code() == SC.INVALID_ARGUMENT, f"{e.code()}: {e.details()}"


# ---------------------------------------------------------------------------
# Durability and revisions
# ---------------------------------------------------------------------------

def test_a_restart_keeps_every_lease_and_pool(ipamd, client, pb):
    client.apply_pool("p", ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:1::/120"])
    client.apply_pool("s", ["203.0.113.0/24"], allow_share=True,
                      search_order=pb.ipam.SEARCH_ORDER_DESC, skip_end_ips=True)
    for i in range(200):
        fields = {}
        if i % 3 == 0:
            fields["ttl_seconds"] = 3600
        if i % 5 == 0:
            fields["labels"] = {"n": str(i), "kind": "five"}
        pool = "p"
        if i % 11 == 0:
            pool = "s"
            fields["ports"] = [tcp(1000 + i)]
        elif i % 7 == 0:
            fields["family"] = pb.ipam.FAMILY_REQUIRE_DUAL_STACK
        assert client.Allocate(pool=pool, owner=f"lease-{i:03d}", **fields).created
    client.Release(owner="lease-100")
    client.Renew(owner="lease-003", ttl_seconds=7200)
    before_leases, _ = client.all_leases()
    before_pools = list(client.ListPools().pools)
    before_rev = client.revision()
    assert len(before_leases) == 199

    ipamd.restart()

    after_leases, _ = client.all_leases()
    assert len(after_leases) == len(before_leases)
    for a, b in zip(after_leases, before_leases):
        assert a == b, f"lease changed across restart:\nbefore:\n{b}\nafter:\n{a}"
    assert list(client.ListPools().pools) == before_pools
    assert client.revision() >= before_rev

    held = {addr for le in before_leases for addr in le.addresses}
    new = [client.alloc("p", f"new-{i:02d}").addresses[0] for i in range(50)]
    assert len(set(new)) == 50
    assert not held & set(new), f"addresses handed out twice: {held & set(new)}"
    new_rev = client.GetLease(owner="new-00").lease.revision
    assert new_rev > before_rev


def test_leases_expire_after_a_restart_too(ipamd, client):
    client.apply_pool("p", ["192.0.2.0/24"])
    # Long enough to outlive the restart even under valgrind, so that it is the
    # restarted ipamd that expires it.
    short = client.alloc("p", "short", ttl_seconds=8)
    ipamd.restart()
    assert client.GetLease(owner="short").lease.expire_time == short.expire_time
    wait_until_gone(client, "short", 20, "a lease with ttl 8s survived 20s and a restart")


def test_every_change_bumps_the_revision_and_a_rejected_request_does_not(client, pb):
    r0 = client.revision()
    pool = client.apply_pool("p", ["192.0.2.0/30"]).pool
    assert pool.revision > r0
    assert pool.create_revision == pool.revision
    leases = [client.alloc("p", f"o{i}") for i in range(4)]
    revs = [le.revision for le in leases]
    assert revs[0] > pool.revision
    assert all(a < b for a, b in zip(revs, revs[1:])), revs
    assert all(le.create_revision == le.revision for le in leases)
    assert client.revision() == revs[-1]

    rejected = [
        (SC.RESOURCE_EXHAUSTED, client.Allocate, dict(pool="p", owner="full")),
        (SC.NOT_FOUND, client.Allocate, dict(pool="nope", owner="x")),
        (SC.INVALID_ARGUMENT, client.Allocate, dict(pool="p", owner="bad owner")),
        (SC.FAILED_PRECONDITION, client.Allocate, dict(pool="", owner="o0",
                                                        addresses=["203.0.113.1"])),
        (SC.NOT_FOUND, client.Release, dict(owner="nobody")),
        (SC.NOT_FOUND, client.Renew, dict(owner="nobody")),
        (SC.FAILED_PRECONDITION, client.DeletePool, dict(name="p")),
        (SC.NOT_FOUND, client.DeletePool, dict(name="nope")),
        (SC.INVALID_ARGUMENT, client.ApplyPool,
         dict(pool=pb.ipam.Pool(name="p", blocks=["192.0.2.0/33"]))),
        (SC.INVALID_ARGUMENT, client.ApplyPool,
         dict(pool=pb.ipam.Pool(name="bad name", blocks=["192.0.2.0/24"]))),
    ]
    for code, fn, fields in rejected:
        expect_status(code, fn, **fields)
        assert client.revision() == revs[-1], f"rejected {fn.path} {fields} bumped the revision"

    released = client.Release(owner="o0")
    assert client.revision() > revs[-1]
    # The lease as it was; its revision may be the release's own (not in the contract).
    assert released.lease.create_revision == revs[0]
    assert released.lease.revision in (revs[0], client.revision())
