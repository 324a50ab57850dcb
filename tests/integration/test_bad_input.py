"""Bad input of every kind, and proof that it changes nothing.

Three doors are tried: the gRPC API (raw bytes, so malformed protobuf and strings no
conforming client would build reach ipamd as they are), ipamctl's flags, and the pools
file read at start.  For each bad input the test asserts the status code (or exit
code), a message naming the bad input, and that the state is unchanged:

- over gRPC, a snapshot (the serialized ListPools reply, every ListLeases page as sent
  by ipamd, and the revision) is byte-for-byte equal before and after;
- for the pools file, the database file is byte-for-byte equal before and after, and a
  restart without --config serves exactly the state from before.

The API cases share one seeded ipamd (see `world`): each case compares its own before
and after, and a case that changed anything or stopped the daemon gets the next case a
fresh one.  Only documentation address space is used.
"""

import os
import shutil
import signal
import subprocess
import time

import grpc
import pytest
from google.protobuf.message import DecodeError

from ipam_client import Daemon

SC = grpc.StatusCode

CMD_TIMEOUT = 30        # one ipamctl or ipamd run that must end by itself
SNAPSHOT_PAGE = 3       # ListLeases page size of a snapshot: the seeded leases span pages
TWO_MIB = 2 << 20
FIVE_MIB = 5 << 20      # over gRPC's default 4 MiB receive limit
MAX_TTL = 315360000     # ten years, the API's limit

ALLOCATE = "/ipam.v1.Ipam/Allocate"


# --------------------------------------------------------------------------
# Protobuf wire format by hand, for what no conforming client would send.
# --------------------------------------------------------------------------

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


def varint(n):
    n &= (1 << 64) - 1  # negative int32/int64 values are sent as 10-byte varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(field, wire_type):
    return varint(field << 3 | wire_type)


def ld(field, payload):
    """A length-delimited field."""
    if isinstance(payload, str):
        payload = payload.encode()
    return tag(field, LEN) + varint(len(payload)) + payload


def vi(field, n):
    return tag(field, VARINT) + varint(n)


def f32(field):
    return tag(field, I32) + b"\x01\x00\x00\x00"


def f64(field):
    return tag(field, I64) + b"\x01\x00\x00\x00\x00\x00\x00\x00"


# --------------------------------------------------------------------------
# The seeded daemon and the snapshot.
# --------------------------------------------------------------------------

def seed(client, pb):
    """Pools of every kind and leases spanning three snapshot pages."""
    P = pb.ipam
    client.apply_pool("lan", ["192.0.2.0/24", "2001:db8:1::/120"], skip_end_ips=True)
    client.apply_pool("v4", ["198.51.100.0/28"], search_order=P.SEARCH_ORDER_DESC)
    client.apply_pool("share", ["203.0.113.0/30"], allow_share=True)
    client.apply_pool("full", ["203.0.113.8/32"])
    client.apply_pool("blue", ["192.0.2.0/24"], space="blue")
    client.alloc("lan", "a", labels={"app": "web"})
    client.alloc("lan", "b", family=P.FAMILY_REQUIRE_DUAL_STACK, ttl_seconds=86400)
    client.alloc("share", "c", ports=[P.Port(protocol="TCP", port=80),
                                      P.Port(protocol="UDP", port=53)])
    client.alloc("v4", "d", sharing_key="k1", ports=[P.Port(protocol="SCTP", port=9)])
    client.alloc("full", "full-holder")
    client.alloc("", "static-1", addresses=["198.51.100.200"])
    client.alloc("blue", "e", addresses=["192.0.2.10"])


def snapshot(client, pb):
    """(ListPools reply bytes, every ListLeases page's bytes, revision)."""
    P = pb.ipam
    pools = client.raw_unary("/ipam.v1.Ipam/ListPools", b"")
    pages, token = [], ""
    for _ in range(10000):
        req = P.ListLeasesRequest(page_size=SNAPSHOT_PAGE, page_token=token)
        raw = client.raw_unary("/ipam.v1.Ipam/ListLeases", req.SerializeToString())
        pages.append(raw)
        try:
            token = P.ListLeasesResponse.FromString(raw).next_page_token
        except DecodeError as e:
            # ipamd sent a page a conforming client cannot read: part of the snapshot.
            pages.append(f"undecodable page: {e}".encode())
            break
        if not token:
            break
    revision = P.ListPoolsResponse.FromString(pools).revision
    return pools, tuple(pages), revision


def describe_diff(before, after, pb):
    P = pb.ipam
    lines = []
    if before[2] != after[2]:
        lines.append(f"revision {before[2]} -> {after[2]}")
    if before[0] != after[0]:
        def names(raw):
            return [p.name for p in P.ListPoolsResponse.FromString(raw).pools]
        lines.append(f"pools {names(before[0])} -> {names(after[0])}")
    if before[1] != after[1]:
        def owners(pages):
            out = []
            for raw in pages:
                try:
                    out += [l.owner for l in P.ListLeasesResponse.FromString(raw).leases]
                except DecodeError:
                    out.append("<undecodable page>")
            return out
        lines.append(f"lease owners {owners(before[1])} -> {owners(after[1])}")
    return "; ".join(lines) or "no visible difference"


class World:
    """One seeded ipamd shared by the API cases, replaced when a case spoils it."""

    def __init__(self, tmp_path_factory, pb, ipamd_path):
        self.tmp_path_factory = tmp_path_factory
        self.pb = pb
        self.ipamd_path = ipamd_path
        self.daemon = None
        self.spoiled = True
        self.generations = 0

    def fresh(self):
        if self.daemon is not None and not self.spoiled and self.daemon.running():
            return self.daemon
        self.close()
        self.generations += 1
        workdir = self.tmp_path_factory.mktemp(f"bad-input-world-{self.generations}")
        self.daemon = Daemon(self.ipamd_path, workdir, self.pb)
        self.daemon.start()
        seed(self.daemon.client, self.pb)
        self.spoiled = False
        return self.daemon

    def close(self):
        d, self.daemon = self.daemon, None
        if d is None:
            return
        try:
            if d.proc is not None:
                d.stop()
        finally:
            d.cleanup()


@pytest.fixture(scope="module")
def world(tmp_path_factory, pb, ipamd_path):
    w = World(tmp_path_factory, pb, ipamd_path)
    yield w
    w.close()  # ipamd must exit 0 on SIGTERM, as at every fixture teardown


@pytest.fixture
def seeded(request, world):
    """The shared ipamd, seeded; spoiled (replaced for the next test) if this test fails."""
    d = world.fresh()
    request.node._ipamd_daemons = [d]  # conftest attaches its stderr to a failure
    failed_before = request.session.testsfailed
    yield d
    if request.session.testsfailed != failed_before or not d.running():
        world.spoiled = True


def send(client, method, payload, timeout=60):
    """Sends raw bytes; returns (code, details, reply bytes or None)."""
    try:
        reply = client.raw_unary(method, payload, timeout=timeout)
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None
    return SC.OK, "", reply


def check_rejected(daemon, pb, method, payload, codes, wants):
    """Sends payload; asserts a code in codes, every substring of wants in the message,
    a living daemon and an unchanged snapshot."""
    client = daemon.client
    before = snapshot(client, pb)
    code, details, reply = send(client, method, payload)
    assert daemon.running(), f"ipamd died on this request:\n{daemon.stderr_text()}"
    after = snapshot(client, pb)
    problems = []
    if code not in codes:
        shown = reply[:300] if reply is not None else details
        problems.append(f"expected {' or '.join(c.name for c in codes)}, got {code.name}: "
                        f"{shown!r}")
    else:
        for w in wants:
            if w not in details:
                problems.append(f"message {details!r} does not name {w!r}")
    if after != before:
        problems.append(f"state changed: {describe_diff(before, after, pb)}")
    assert not problems, f"{method}: " + "\n".join(problems)


# --------------------------------------------------------------------------
# The table of bad API requests.
#
# Each row: (id, method, build(P) -> message or bytes, codes, substrings of the message).
# A row that would be a valid request but for the bad part is valid everywhere else, so
# ipamd ignoring the bad part shows up as a success and a changed state.
# --------------------------------------------------------------------------

INVALID = (SC.INVALID_ARGUMENT,)
NOT_FOUND = (SC.NOT_FOUND,)
# An owner that cannot exist holds nothing: either answer is right for reads and releases.
NO_SUCH_OWNER = (SC.INVALID_ARGUMENT, SC.NOT_FOUND)


def cannot_decode(method, msg_type):
    return [f"cannot decode the request of /ipam.v1.Ipam/{method} as ipam.v1.{msg_type}"]


def alloc(P, **fields):
    fields.setdefault("pool", "lan")
    fields.setdefault("owner", "newcomer")
    return P.AllocateRequest(**fields)


def valid_alloc_bytes(P):
    """A valid Allocate for a new owner; fields appended to it override or add."""
    return alloc(P).SerializeToString()


def pool_req(P, name="newpool", blocks=("198.51.100.64/26",), **options):
    return P.ApplyPoolRequest(pool=P.Pool(name=name, blocks=list(blocks), **options))


def many_blocks(n):
    return [f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::/64" for i in range(n)]


ALLOC_DECODE = cannot_decode("Allocate", "AllocateRequest")
APPLY_DECODE = cannot_decode("ApplyPool", "ApplyPoolRequest")

API_CASES = [
    # ---- malformed protobuf -------------------------------------------------------
    ("pb-wire-type-6", "Allocate", lambda P: valid_alloc_bytes(P) + tag(2, 6) + b"x",
     INVALID, ALLOC_DECODE),
    ("pb-wire-type-7", "Allocate", lambda P: valid_alloc_bytes(P) + tag(2, 7), INVALID,
     ALLOC_DECODE),
    ("pb-field-number-0", "Allocate", lambda P: valid_alloc_bytes(P) + b"\x00\x01", INVALID,
     ALLOC_DECODE),
    # Padded (0x80 0x00), protobuf-c's own decoder lets it through.
    ("pb-field-number-0-padded", "Allocate", lambda P: valid_alloc_bytes(P) + b"\x80\x00\x00",
     INVALID, ALLOC_DECODE + ["AllocateRequest: field number 0 is not valid"]),
    ("pb-overlong-varint", "Allocate",
     lambda P: valid_alloc_bytes(P) + tag(6, VARINT) + b"\xff" * 10 + b"\x01", INVALID,
     ALLOC_DECODE),
    ("pb-length-past-the-end", "Allocate",
     lambda P: valid_alloc_bytes(P) + tag(9, LEN) + varint(100) + b"short", INVALID,
     ALLOC_DECODE),
    ("pb-length-2^63", "Allocate",
     lambda P: valid_alloc_bytes(P) + tag(9, LEN) + varint(1 << 63) + b"x", INVALID,
     ALLOC_DECODE),
    ("pb-truncated-tag", "Allocate", lambda P: valid_alloc_bytes(P) + b"\x80", INVALID,
     ALLOC_DECODE),
    ("pb-end-group-without-start", "Allocate",
     lambda P: valid_alloc_bytes(P) + tag(2, EGROUP), INVALID, ALLOC_DECODE),
    ("pb-unterminated-group", "Allocate",
     lambda P: valid_alloc_bytes(P) + tag(20, SGROUP) + vi(1, 1), INVALID, ALLOC_DECODE),
    ("pb-garbage-apply-pool", "ApplyPool", lambda P: b"\xff\xff\xff\xff", INVALID,
     APPLY_DECODE),
    ("pb-garbage-release", "Release", lambda P: b"\x0a\x10a", INVALID,
     cannot_decode("Release", "ReleaseRequest")),
    ("pb-garbage-list-leases", "ListLeases", lambda P: b"\x20", INVALID,
     cannot_decode("ListLeases", "ListLeasesRequest")),
    ("pb-garbage-delete-pool", "DeletePool", lambda P: b"\x0a\x04lan", INVALID,
     cannot_decode("DeletePool", "DeletePoolRequest")),

    # ---- wrong wire types, field by field ------------------------------------------
    ("wt-allocate-pool-as-varint", "Allocate", lambda P: valid_alloc_bytes(P) + vi(1, 1),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-owner-as-varint", "Allocate", lambda P: valid_alloc_bytes(P) + vi(2, 7),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-owner-as-fixed32", "Allocate", lambda P: valid_alloc_bytes(P) + f32(2),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-owner-as-fixed64", "Allocate", lambda P: valid_alloc_bytes(P) + f64(2),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-owner-as-group", "Allocate",
     lambda P: valid_alloc_bytes(P) + tag(2, SGROUP) + tag(2, EGROUP), INVALID, ALLOC_DECODE),
    ("wt-allocate-addresses-as-varint", "Allocate",
     lambda P: valid_alloc_bytes(P) + vi(3, 5), INVALID, ALLOC_DECODE),
    ("wt-allocate-family-as-fixed32", "Allocate", lambda P: valid_alloc_bytes(P) + f32(4),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-family-as-fixed64", "Allocate", lambda P: valid_alloc_bytes(P) + f64(4),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-ttl-as-fixed64", "Allocate", lambda P: valid_alloc_bytes(P) + f64(6),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-ttl-as-string", "Allocate", lambda P: valid_alloc_bytes(P) + ld(6, "60"),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-labels-as-varint", "Allocate", lambda P: valid_alloc_bytes(P) + vi(7, 1),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-label-key-as-varint", "Allocate",
     lambda P: valid_alloc_bytes(P) + ld(7, vi(1, 1) + ld(2, "v")), INVALID, ALLOC_DECODE),
    ("wt-allocate-ports-as-fixed32", "Allocate", lambda P: valid_alloc_bytes(P) + f32(8),
     INVALID, ALLOC_DECODE),
    ("wt-allocate-port-number-as-string", "Allocate",
     lambda P: valid_alloc_bytes(P) + ld(8, ld(1, "TCP") + ld(2, "80")), INVALID,
     ALLOC_DECODE),
    ("wt-allocate-port-protocol-as-varint", "Allocate",
     lambda P: valid_alloc_bytes(P) + ld(8, vi(1, 6) + vi(2, 80)), INVALID, ALLOC_DECODE),
    ("wt-allocate-sharing-key-as-varint", "Allocate",
     lambda P: valid_alloc_bytes(P) + vi(9, 1), INVALID, ALLOC_DECODE),
    ("wt-allocate-space-as-fixed64", "Allocate", lambda P: valid_alloc_bytes(P) + f64(10),
     INVALID, ALLOC_DECODE),
    ("wt-apply-pool-as-varint", "ApplyPool", lambda P: vi(1, 1), INVALID, APPLY_DECODE),
    ("wt-apply-pool-name-as-fixed32", "ApplyPool",
     lambda P: ld(1, pool_req(P).pool.SerializeToString() + f32(1)), INVALID, APPLY_DECODE),
    ("wt-apply-pool-blocks-as-varint", "ApplyPool",
     lambda P: ld(1, pool_req(P).pool.SerializeToString() + vi(3, 1)), INVALID, APPLY_DECODE),
    ("wt-apply-pool-search-order-as-string", "ApplyPool",
     lambda P: ld(1, pool_req(P).pool.SerializeToString() + ld(4, "desc")), INVALID,
     APPLY_DECODE),
    ("wt-release-owner-as-varint", "Release", lambda P: vi(1, 1), INVALID,
     cannot_decode("Release", "ReleaseRequest")),
    ("wt-renew-ttl-as-string", "Renew", lambda P: ld(1, "b") + ld(2, "60"), INVALID,
     cannot_decode("Renew", "RenewRequest")),
    # Booleans: a conforming parser skips (or refuses) a bool of the wrong wire type, so
    # none of these may read as true.  DeletePool of "v4" without force is refused
    # (it holds a lease); read as force=true it would delete the pool and its lease.
    ("wt-delete-pool-force-as-string", "DeletePool", lambda P: ld(1, "v4") + ld(2, "yes"),
     INVALID, cannot_decode("DeletePool", "DeletePoolRequest")),
    ("wt-delete-pool-force-as-fixed32", "DeletePool", lambda P: ld(1, "v4") + f32(2),
     INVALID, cannot_decode("DeletePool", "DeletePoolRequest")),
    ("wt-delete-pool-force-as-fixed64", "DeletePool", lambda P: ld(1, "v4") + f64(2),
     INVALID, cannot_decode("DeletePool", "DeletePoolRequest")),
    ("wt-apply-pool-allow-share-as-string", "ApplyPool",
     lambda P: ld(1, pool_req(P).pool.SerializeToString() + ld(7, "yes")), INVALID,
     APPLY_DECODE),
    ("wt-apply-pool-skip-end-ips-as-fixed32", "ApplyPool",
     lambda P: ld(1, pool_req(P).pool.SerializeToString() + f32(5)), INVALID, APPLY_DECODE),
    ("wt-list-leases-page-size-as-string", "ListLeases", lambda P: ld(4, "10"), INVALID,
     cannot_decode("ListLeases", "ListLeasesRequest")),

    # ---- huge inputs ---------------------------------------------------------------
    ("huge-owner-1MiB", "Allocate", lambda P: alloc(P, owner="x" * (1 << 20)), INVALID,
     ["invalid owner `" + "x" * 64]),
    ("huge-10000-labels", "Allocate",
     lambda P: alloc(P, labels={f"k{i}": "v" for i in range(10000)}), INVALID,
     ["too many labels (10000, at most 64)"]),
    ("huge-65-labels", "Allocate",
     lambda P: alloc(P, labels={f"k{i}": "v" for i in range(65)}), INVALID,
     ["too many labels (65, at most 64)"]),
    ("huge-label-value-1MiB", "Allocate", lambda P: alloc(P, labels={"big": "v" * (1 << 20)}),
     INVALID, ["invalid value for label `big'"]),
    ("huge-label-key-254", "Allocate", lambda P: alloc(P, labels={"k" * 254: "v"}), INVALID,
     ["invalid label key `" + "k" * 64]),
    ("huge-100000-blocks", "ApplyPool", lambda P: pool_req(P, "big", many_blocks(100000)),
     INVALID, ["pool `big' has 100000 blocks, at most 1024"]),
    ("huge-1025-blocks", "ApplyPool", lambda P: pool_req(P, "big", many_blocks(1025)),
     INVALID, ["pool `big' has 1025 blocks, at most 1024"]),
    ("huge-block-1MiB", "ApplyPool", lambda P: pool_req(P, "big", ["1" * (1 << 20)]),
     INVALID, ["pool `big'", "1" * 64]),
    ("huge-pool-name-1MiB", "ApplyPool", lambda P: pool_req(P, "p" * (1 << 20)), INVALID,
     ["invalid pool name `" + "p" * 64]),
    ("huge-100000-ports", "Allocate",
     lambda P: alloc(P, ports=[P.Port(protocol="TCP", port=1 + i % 65535)
                               for i in range(100000)]),
     INVALID, ["too many ports (100000, at most 64)"]),
    ("huge-100000-addresses", "Allocate",
     lambda P: alloc(P, addresses=["192.0.2.77"] * 100000), INVALID,
     ["at most two addresses (one per family), got 100000"]),
    ("huge-sharing-key-1MiB", "Allocate",
     lambda P: alloc(P, sharing_key="s" * (1 << 20), ports=[P.Port(protocol="TCP", port=1)]),
     INVALID, ["invalid sharing key `" + "s" * 64]),
    # Over gRPC's 4 MiB receive limit: gRPC itself refuses, before ipamd sees it.
    ("huge-owner-5MiB-over-the-message-limit", "Allocate",
     lambda P: alloc(P, owner="x" * FIVE_MIB), (SC.RESOURCE_EXHAUSTED,), ["larger than max"]),
    ("huge-300000-blocks-over-the-message-limit", "ApplyPool",
     lambda P: pool_req(P, "big", many_blocks(300000)), (SC.RESOURCE_EXHAUSTED,),
     ["larger than max"]),
    ("huge-release-owner-5MiB-over-the-message-limit", "Release",
     lambda P: P.ReleaseRequest(owner="a" * FIVE_MIB), (SC.RESOURCE_EXHAUSTED,),
     ["larger than max"]),
    ("huge-owner-2MiB-release", "Release", lambda P: P.ReleaseRequest(owner="a" * TWO_MIB),
     NO_SUCH_OWNER, ["a" * 64]),

    # ---- CIDRs and ranges ------------------------------------------------------------
    ("block-prefix-33", "ApplyPool", lambda P: pool_req(P, blocks=["192.0.2.0/33"]), INVALID,
     ["pool `newpool'", "192.0.2.0/33"]),
    ("block-prefix-129", "ApplyPool", lambda P: pool_req(P, blocks=["2001:db8::/129"]),
     INVALID, ["2001:db8::/129"]),
    ("block-prefix-negative", "ApplyPool", lambda P: pool_req(P, blocks=["192.0.2.0/-1"]),
     INVALID, ["192.0.2.0/-1"]),
    ("block-prefix-empty", "ApplyPool", lambda P: pool_req(P, blocks=["192.0.2.0/"]),
     INVALID, ["192.0.2.0/"]),
    ("block-prefix-leading-zero", "ApplyPool", lambda P: pool_req(P, blocks=["192.0.2.0/024"]),
     INVALID, ["192.0.2.0/024"]),
    ("block-octet-300", "ApplyPool", lambda P: pool_req(P, blocks=["300.0.0.0/8"]), INVALID,
     ["300.0.0.0/8"]),
    ("block-no-address", "ApplyPool", lambda P: pool_req(P, blocks=["/24"]), INVALID, ["/24"]),
    ("block-three-octets", "ApplyPool", lambda P: pool_req(P, blocks=["192.0.2/24"]), INVALID,
     ["192.0.2/24"]),
    ("block-triple-colon", "ApplyPool", lambda P: pool_req(P, blocks=["2001:db8:::/64"]),
     INVALID, ["2001:db8:::/64"]),
    ("block-bare-address", "ApplyPool", lambda P: pool_req(P, blocks=["192.0.2.1"]), INVALID,
     ["192.0.2.1"]),
    ("block-a-word", "ApplyPool", lambda P: pool_req(P, blocks=["everything"]), INVALID,
     ["everything"]),
    ("block-empty", "ApplyPool", lambda P: pool_req(P, blocks=[""]), INVALID,
     ["pool `newpool'", "empty block"]),
    ("block-two-in-one-entry", "ApplyPool",
     lambda P: pool_req(P, blocks=["192.0.2.0/24,198.51.100.0/24"]), INVALID,
     ["192.0.2.0/24,198.51.100.0/24"]),
    ("block-ipv4-mapped-ipv6", "ApplyPool", lambda P: pool_req(P, blocks=["::ffff:0:0/96"]),
     INVALID, ["::ffff:0:0/96"]),
    ("block-open-range", "ApplyPool", lambda P: pool_req(P, blocks=["192.0.2.1-"]), INVALID,
     ["192.0.2.1-"]),
    ("block-range-of-cidrs", "ApplyPool",
     lambda P: pool_req(P, blocks=["192.0.2.0/28-192.0.2.32/28"]), INVALID,
     ["192.0.2.0/28-192.0.2.32/28"]),
    ("block-one-bad-among-good", "ApplyPool",
     lambda P: pool_req(P, blocks=["192.0.2.0/24", "2001:db8::/64", "198.51.100.0/33"]),
     INVALID, ["198.51.100.0/33"]),
    ("block-bad-on-an-existing-pool", "ApplyPool",
     lambda P: pool_req(P, "lan", blocks=["192.0.2.0/24", "bogus"]), INVALID,
     ["pool `lan'", "bogus"]),
    ("range-reversed-ipv4", "ApplyPool",
     lambda P: pool_req(P, blocks=["192.0.2.9-192.0.2.1"]), INVALID,
     ["range `192.0.2.9-192.0.2.1' starts after it ends"]),
    ("range-reversed-ipv6", "ApplyPool",
     lambda P: pool_req(P, blocks=["2001:db8::9-2001:db8::1"]), INVALID,
     ["range `2001:db8::9-2001:db8::1' starts after it ends"]),
    ("range-mixed-families", "ApplyPool",
     lambda P: pool_req(P, blocks=["192.0.2.1-2001:db8::1"]), INVALID,
     ["range `192.0.2.1-2001:db8::1' mixes IPv4 and IPv6"]),
    ("range-mixed-families-v6-first", "ApplyPool",
     lambda P: pool_req(P, blocks=["2001:db8::1-192.0.2.1"]), INVALID,
     ["range `2001:db8::1-192.0.2.1' mixes IPv4 and IPv6"]),

    # ---- pools: other fields -------------------------------------------------------
    ("pool-missing", "ApplyPool", lambda P: P.ApplyPoolRequest(), INVALID,
     ["ApplyPool needs a pool"]),
    ("pool-no-blocks", "ApplyPool", lambda P: pool_req(P, blocks=[]), INVALID,
     ["pool `newpool' has no blocks"]),
    ("pool-name-empty", "ApplyPool", lambda P: pool_req(P, ""), INVALID,
     ["invalid pool name `'"]),
    ("pool-name-space", "ApplyPool", lambda P: pool_req(P, "my pool"), INVALID,
     ["invalid pool name `my pool'"]),
    ("pool-name-64", "ApplyPool", lambda P: pool_req(P, "p" * 64), INVALID,
     ["invalid pool name `" + "p" * 64]),
    ("pool-name-control", "ApplyPool", lambda P: pool_req(P, "a\x01b"), INVALID,
     ["invalid pool name `a\x01b'"]),
    ("pool-space-invalid", "ApplyPool", lambda P: pool_req(P, space="blue sky"), INVALID,
     ["invalid space `blue sky'"]),
    ("pool-search-order-2", "ApplyPool", lambda P: pool_req(P, search_order=2), INVALID,
     ["invalid search order 2 in pool `newpool'"]),
    ("pool-search-order-99", "ApplyPool", lambda P: pool_req(P, search_order=99), INVALID,
     ["invalid search order 99"]),
    ("pool-search-order-negative", "ApplyPool", lambda P: pool_req(P, search_order=-1),
     INVALID, ["invalid search order -1"]),
    ("pool-move-space-with-leases", "ApplyPool",
     lambda P: pool_req(P, "lan", ["192.0.2.0/24", "2001:db8:1::/120"], skip_end_ips=True,
                        space="green"),
     (SC.FAILED_PRECONDITION,), ["pool `lan'", "space `green'"]),
    ("pool-to-dhcp-with-leases", "ApplyPool", lambda P: pool_req(P, "v4", ["0.0.0.0/32"]),
     (SC.FAILED_PRECONDITION,), ["pool `v4'", "DHCP"]),
    ("get-pool-unknown", "GetPool", lambda P: P.GetPoolRequest(name="nope"), NOT_FOUND,
     ["pool `nope' not found"]),
    ("get-pool-empty-name", "GetPool", lambda P: P.GetPoolRequest(name=""),
     (SC.NOT_FOUND, SC.INVALID_ARGUMENT), ["pool `'"]),
    ("delete-pool-unknown", "DeletePool", lambda P: P.DeletePoolRequest(name="nope"),
     NOT_FOUND, ["pool `nope' not found"]),
    ("delete-pool-with-leases-unforced", "DeletePool", lambda P: P.DeletePoolRequest(name="lan"),
     (SC.FAILED_PRECONDITION,), ["pool `lan' has 2 leases"]),

    # ---- owners ----------------------------------------------------------------------
    ("owner-empty", "Allocate", lambda P: alloc(P, owner=""), INVALID, ["invalid owner `'"]),
    ("owner-leading-space", "Allocate", lambda P: alloc(P, owner=" web"), INVALID,
     ["invalid owner ` web'"]),
    ("owner-inner-space", "Allocate", lambda P: alloc(P, owner="my web"), INVALID,
     ["invalid owner `my web'"]),
    ("owner-tab", "Allocate", lambda P: alloc(P, owner="a\tb"), INVALID,
     ["invalid owner `a\tb'"]),
    ("owner-newline", "Allocate", lambda P: alloc(P, owner="a\nb"), INVALID,
     ["invalid owner `a\nb'"]),
    ("owner-escape", "Allocate", lambda P: alloc(P, owner="a\x1b[31mb"), INVALID,
     ["invalid owner `a\x1b[31mb'"]),
    ("owner-del", "Allocate", lambda P: alloc(P, owner="a\x7fb"), INVALID,
     ["invalid owner `a\x7fb'"]),
    ("owner-non-ascii", "Allocate", lambda P: alloc(P, owner="caf\u00e9"), INVALID,
     ["invalid owner `caf"]),
    ("owner-254", "Allocate", lambda P: alloc(P, owner="o" * 254), INVALID,
     ["invalid owner `" + "o" * 64]),
    # Strings that are not valid UTF-8 or hold a NUL (C strings would cut the
    # owner at it) are refused while decoding, naming the field.
    ("owner-invalid-utf8", "Allocate", lambda P: ld(1, "lan") + ld(2, b"\xff\xfe"), INVALID,
     ["AllocateRequest.owner: not valid UTF-8"]),
    ("owner-with-nul-new", "Allocate", lambda P: alloc(P, owner="newcomer\x00x"), INVALID,
     ["AllocateRequest.owner: not valid UTF-8 text (or holds a NUL byte)"]),
    ("owner-with-nul-existing", "Allocate", lambda P: alloc(P, owner="a\x00b"), INVALID,
     ["AllocateRequest.owner: not valid UTF-8 text (or holds a NUL byte)"]),
    ("release-owner-with-nul", "Release", lambda P: P.ReleaseRequest(owner="a\x00zzz"),
     NO_SUCH_OWNER, ["a"]),
    ("renew-owner-with-nul", "Renew", lambda P: P.RenewRequest(owner="b\x00zzz", ttl_seconds=60),
     NO_SUCH_OWNER, ["b"]),
    ("release-owner-empty", "Release", lambda P: P.ReleaseRequest(owner=""), NO_SUCH_OWNER,
     ["owner `'"]),
    ("release-owner-with-space", "Release", lambda P: P.ReleaseRequest(owner="a b"),
     NO_SUCH_OWNER, ["owner `a b'"]),
    ("release-owner-unknown", "Release", lambda P: P.ReleaseRequest(owner="nobody"), NOT_FOUND,
     ["owner `nobody' holds no lease"]),
    ("renew-owner-unknown", "Renew", lambda P: P.RenewRequest(owner="nobody"), NOT_FOUND,
     ["owner `nobody' holds no lease"]),
    ("get-lease-owner-control", "GetLease", lambda P: P.GetLeaseRequest(owner="a\x01"),
     NO_SUCH_OWNER, ["owner `a\x01'"]),

    # ---- pools named in requests -------------------------------------------------
    ("allocate-unknown-pool", "Allocate", lambda P: alloc(P, pool="nope"), NOT_FOUND,
     ["pool `nope' not found"]),
    ("allocate-pool-name-with-nul", "Allocate", lambda P: alloc(P, pool="lan\x00x"),
     (SC.NOT_FOUND, SC.INVALID_ARGUMENT), ["AllocateRequest.pool: "]),
    ("allocate-pool-in-another-space", "Allocate", lambda P: alloc(P, space="blue"), INVALID,
     ["pool `lan' is in space `default', not `blue'"]),
    ("list-leases-unknown-pool", "ListLeases", lambda P: P.ListLeasesRequest(pool="nope"),
     NOT_FOUND, ["pool `nope' not found"]),
    ("apply-pool-name-with-nul", "ApplyPool",
     lambda P: pool_req(P, "v4\x00evil", ["198.51.100.128/25"]), INVALID,
     ["ipam.v1.Pool.name: "]),
    ("delete-pool-name-with-nul", "DeletePool",
     lambda P: P.DeletePoolRequest(name="lan\x00x", force=True),
     (SC.NOT_FOUND, SC.INVALID_ARGUMENT), ["DeletePoolRequest.name: "]),

    # ---- requested addresses and families ------------------------------------------
    ("address-octet-300", "Allocate", lambda P: alloc(P, addresses=["192.0.2.300"]), INVALID,
     ["invalid address `192.0.2.300'"]),
    ("address-with-prefix", "Allocate", lambda P: alloc(P, addresses=["192.0.2.77/32"]),
     INVALID, ["invalid address `192.0.2.77/32'"]),
    ("address-empty", "Allocate", lambda P: alloc(P, addresses=[""]), INVALID,
     ["invalid address `'"]),
    ("address-ipv4-mapped", "Allocate", lambda P: alloc(P, addresses=["::ffff:192.0.2.77"]),
     INVALID, ["invalid address `::ffff:192.0.2.77'"]),
    ("address-with-nul", "Allocate", lambda P: alloc(P, addresses=["192.0.2.77\x00junk"]),
     INVALID, ["AllocateRequest.addresses: "]),
    ("address-three", "Allocate",
     lambda P: alloc(P, addresses=["192.0.2.77", "2001:db8:1::77", "192.0.2.78"]), INVALID,
     ["at most two addresses (one per family), got 3"]),
    ("address-two-ipv4", "Allocate", lambda P: alloc(P, addresses=["192.0.2.77", "192.0.2.78"]),
     INVALID, ["two IPv4 addresses requested"]),
    ("address-two-ipv6", "Allocate",
     lambda P: alloc(P, addresses=["2001:db8:1::77", "2001:db8:1::78"]), INVALID,
     ["two IPv6 addresses requested"]),
    ("address-outside-the-pool", "Allocate", lambda P: alloc(P, addresses=["203.0.113.77"]),
     INVALID, ["address 203.0.113.77 is not in pool `lan'"]),
    ("address-held-by-another", "Allocate", lambda P: alloc(P, pool="full",
                                                              addresses=["203.0.113.8"]),
     (SC.ALREADY_EXISTS,), ["address 203.0.113.8 is held by owner `full-holder'"]),
    ("address-ipv6-for-family-ipv4", "Allocate",
     lambda P: alloc(P, family=P.FAMILY_IPV4, addresses=["2001:db8:1::77"]), INVALID,
     ["address 2001:db8:1::77 is not of the requested family"]),
    ("address-ipv4-for-family-ipv6", "Allocate",
     lambda P: alloc(P, family=P.FAMILY_IPV6, addresses=["192.0.2.77"]), INVALID,
     ["address 192.0.2.77 is not of the requested family"]),
    ("family-99", "Allocate", lambda P: alloc(P, family=99), INVALID, ["invalid family 99"]),
    ("family-5", "Allocate", lambda P: alloc(P, family=5), INVALID, ["invalid family 5"]),
    ("family-negative", "Allocate", lambda P: alloc(P, family=-1), INVALID,
     ["invalid family -1"]),
    ("primary-family-99", "Allocate",
     lambda P: alloc(P, family=P.FAMILY_REQUIRE_DUAL_STACK, primary_family=99), INVALID,
     ["invalid primary family 99"]),
    ("primary-family-dual", "Allocate",
     lambda P: alloc(P, family=P.FAMILY_REQUIRE_DUAL_STACK,
                     primary_family=P.FAMILY_PREFER_DUAL_STACK), INVALID,
     ["invalid primary family 3"]),
    ("require-dual-on-an-ipv4-pool", "Allocate",
     lambda P: alloc(P, pool="v4", family=P.FAMILY_REQUIRE_DUAL_STACK),
     (SC.FAILED_PRECONDITION,), ["pool `v4' has no IPv6 addresses"]),
    ("ipv6-from-an-ipv4-pool", "Allocate", lambda P: alloc(P, pool="v4", family=P.FAMILY_IPV6),
     (SC.FAILED_PRECONDITION,), ["pool `v4' has no IPv6 addresses"]),
    ("full-pool", "Allocate", lambda P: alloc(P, pool="full"), (SC.RESOURCE_EXHAUSTED,),
     ["pool `full' has no free IPv4 address"]),
    ("static-without-addresses", "Allocate", lambda P: alloc(P, pool=""), INVALID,
     ["a static reservation (no pool) needs its addresses"]),
    ("static-inside-a-pool", "Allocate", lambda P: alloc(P, pool="", addresses=["192.0.2.77"]),
     INVALID, ["address 192.0.2.77 is in pool `lan'"]),
    ("static-bad-space", "Allocate",
     lambda P: alloc(P, pool="", addresses=["198.51.100.201"], space="a b"), INVALID,
     ["invalid space `a b'"]),
    ("existing-owner-other-pool", "Allocate", lambda P: alloc(P, owner="a", pool="v4"),
     (SC.FAILED_PRECONDITION,), ["owner `a' already holds", "pool `lan'"]),

    # ---- TTLs ------------------------------------------------------------------------
    ("ttl-ten-years-and-a-second", "Allocate", lambda P: alloc(P, ttl_seconds=MAX_TTL + 1),
     INVALID, [f"ttl {MAX_TTL + 1} seconds is more than ten years"]),
    ("ttl-uint32-max", "Allocate", lambda P: alloc(P, ttl_seconds=2**32 - 1), INVALID,
     [f"ttl {2**32 - 1} seconds"]),
    ("renew-ttl-uint32-max", "Renew", lambda P: P.RenewRequest(owner="b", ttl_seconds=2**32 - 1),
     INVALID, [f"ttl {2**32 - 1} seconds is more than ten years"]),
    ("renew-ttl-ten-years-and-a-second", "Renew",
     lambda P: P.RenewRequest(owner="a", ttl_seconds=MAX_TTL + 1), INVALID,
     [f"ttl {MAX_TTL + 1} seconds"]),

    # ---- ports and protocols -----------------------------------------------------
    ("port-0", "Allocate", lambda P: alloc(P, ports=[P.Port(protocol="TCP", port=0)]), INVALID,
     ["invalid port 0: 1 to 65535"]),
    ("port-65536", "Allocate", lambda P: alloc(P, ports=[P.Port(protocol="TCP", port=65536)]),
     INVALID, ["invalid port 65536"]),
    ("port-uint32-max", "Allocate",
     lambda P: alloc(P, ports=[P.Port(protocol="UDP", port=2**32 - 1)]), INVALID,
     [f"invalid port {2**32 - 1}"]),
    ("port-bad-after-good", "Allocate",
     lambda P: alloc(P, ports=[P.Port(protocol="TCP", port=80), P.Port(protocol="TCP", port=0)]),
     INVALID, ["invalid port 0"]),
    ("protocol-icmp", "Allocate", lambda P: alloc(P, ports=[P.Port(protocol="ICMP", port=1)]),
     INVALID, ["invalid protocol `ICMP'"]),
    ("protocol-empty", "Allocate", lambda P: alloc(P, ports=[P.Port(protocol="", port=1)]),
     INVALID, ["invalid protocol `'"]),
    ("protocol-padded", "Allocate", lambda P: alloc(P, ports=[P.Port(protocol=" tcp", port=1)]),
     INVALID, ["invalid protocol ` tcp'"]),
    ("protocol-with-nul", "Allocate",
     lambda P: alloc(P, ports=[P.Port(protocol="TCP\x00x", port=1)]), INVALID,
     ["ipam.v1.Port.protocol: "]),
    ("protocol-number", "Allocate", lambda P: alloc(P, ports=[P.Port(protocol="6", port=1)]),
     INVALID, ["invalid protocol `6'"]),
    ("ports-65", "Allocate",
     lambda P: alloc(P, ports=[P.Port(protocol="TCP", port=i + 1) for i in range(65)]),
     INVALID, ["too many ports (65, at most 64)"]),
    ("sharing-key-with-space", "Allocate",
     lambda P: alloc(P, sharing_key="a key", ports=[P.Port(protocol="TCP", port=1)]), INVALID,
     ["invalid sharing key `a key'"]),

    # ---- labels ------------------------------------------------------------------
    ("label-key-empty", "Allocate", lambda P: alloc(P, labels={"": "v"}), INVALID,
     ["invalid label key `'"]),
    ("label-key-space", "Allocate", lambda P: alloc(P, labels={"my key": "v"}), INVALID,
     ["invalid label key `my key'"]),
    ("label-value-newline", "Allocate", lambda P: alloc(P, labels={"k": "a\nb"}), INVALID,
     ["invalid value for label `k'"]),
    ("label-value-1025", "Allocate", lambda P: alloc(P, labels={"k": "v" * 1025}), INVALID,
     ["invalid value for label `k'"]),
    # A proto3 string is UTF-8: a reply carrying these bytes cannot be read by a
    # conforming client.
    ("label-value-invalid-utf8", "Allocate",
     lambda P: valid_alloc_bytes(P) + ld(7, ld(1, "k") + ld(2, b"\xff\xfe")), INVALID,
     ["LabelsEntry.value: not valid UTF-8"]),
    ("label-value-with-nul", "Allocate", lambda P: alloc(P, labels={"k": "v\x00w"}), INVALID,
     ["LabelsEntry.value: "]),
    ("label-key-with-nul", "Allocate", lambda P: alloc(P, labels={"k\x00x": "v"}), INVALID,
     ["LabelsEntry.key: "]),

    # ---- listing -----------------------------------------------------------------
    ("page-size-10001", "ListLeases", lambda P: P.ListLeasesRequest(page_size=10001), INVALID,
     ["page_size 10001 is more than 10000"]),
    ("page-size-uint32-max", "ListLeases", lambda P: P.ListLeasesRequest(page_size=2**32 - 1),
     INVALID, [f"page_size {2**32 - 1} is more than 10000"]),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_a_bad_request_is_refused_names_the_input_and_changes_nothing(seeded, pb, case):
    _, method, build, codes, wants = case
    req = build(pb.ipam)
    payload = req if isinstance(req, bytes) else req.SerializeToString()
    check_rejected(seeded, pb, f"/ipam.v1.Ipam/{method}", payload, codes, wants)


def test_the_seeded_state_accepts_good_requests(world, seeded, pb):
    """The table's rows are bad only in their bad part: the same requests without it
    succeed.  (Without this, a row could fail for a reason it does not name.)"""
    P = pb.ipam
    world.spoiled = True  # this test changes the state on purpose
    c = seeded.client
    before = snapshot(c, pb)
    assert send(c, ALLOCATE, valid_alloc_bytes(P))[0] == SC.OK
    assert send(c, "/ipam.v1.Ipam/ApplyPool", pool_req(P).SerializeToString())[0] == SC.OK
    assert send(c, ALLOCATE, alloc(P, owner="nc2", labels={f"k{i}": "v" for i in range(64)},
                                   ports=[P.Port(protocol="TCP", port=i + 1) for i in range(64)],
                                   ttl_seconds=MAX_TTL).SerializeToString())[0] == SC.OK
    assert send(c, ALLOCATE, alloc(P, owner="o" * 253,
                                   addresses=["192.0.2.77", "2001:db8:1::77"],
                                   family=P.FAMILY_REQUIRE_DUAL_STACK,
                                   primary_family=P.FAMILY_IPV6).SerializeToString())[0] == SC.OK
    assert send(c, "/ipam.v1.Ipam/ApplyPool",
                pool_req(P, "big", many_blocks(1024)).SerializeToString())[0] == SC.OK
    assert send(c, "/ipam.v1.Ipam/ListLeases",
                P.ListLeasesRequest(page_size=10000).SerializeToString())[0] == SC.OK
    assert snapshot(c, pb) != before


# --------------------------------------------------------------------------
# Truncated requests: a valid request cut at every byte boundary.
# --------------------------------------------------------------------------

def truncation_fails(daemon, pb, method, msg_cls, full, expect_parsed):
    """Sends every proper prefix of full; returns a list of problems.

    A prefix protobuf cannot parse must be refused as undecodable; one it can parse
    (a cut between fields) is a request missing what makes it valid, and must be
    refused as such: expect_parsed(parsed message) -> (codes, substrings)."""
    problems = []
    client = daemon.client
    name = method.rsplit("/", 1)[1]
    for cut in range(len(full)):
        prefix = full[:cut]
        try:
            parsed = msg_cls.FromString(prefix)
        except DecodeError:
            codes, wants = INVALID, cannot_decode(name, msg_cls.DESCRIPTOR.name)
        else:
            codes, wants = expect_parsed(parsed)
        before = snapshot(client, pb)
        code, details, _ = send(client, method, prefix)
        if not daemon.running():
            problems.append(f"cut at {cut}: ipamd died")
            return problems
        after = snapshot(client, pb)
        if code not in codes:
            problems.append(f"cut at {cut}/{len(full)}: expected {codes[0].name}, got "
                            f"{code.name} {details!r}")
        elif any(w not in details for w in wants):
            problems.append(f"cut at {cut}: message {details!r} does not name {wants}")
        if after != before:
            problems.append(f"cut at {cut}: state changed: {describe_diff(before, after, pb)}")
    return problems


def test_an_allocate_request_cut_at_every_byte_is_refused(world, seeded, pb):
    P = pb.ipam
    world.spoiled = True  # the whole request, sent last, allocates
    # Every field but the owner, then the owner last (the wire allows any order): a
    # prefix that parses has no owner, so it is invalid, never a smaller valid request.
    body = P.AllocateRequest(
        pool="lan", addresses=["192.0.2.77", "2001:db8:1::77"],
        family=P.FAMILY_REQUIRE_DUAL_STACK, primary_family=P.FAMILY_IPV6, ttl_seconds=3600,
        labels={"app": "trunc", "tier": "db"},
        ports=[P.Port(protocol="TCP", port=8080), P.Port(protocol="UDP", port=5353)],
        sharing_key="sk-1", space="default").SerializeToString(deterministic=True)
    full = body + ld(2, "truncated-owner")

    def expect(parsed):
        assert parsed.owner == ""
        return INVALID, ["invalid owner `'"]

    problems = truncation_fails(seeded, pb, ALLOCATE, P.AllocateRequest, full, expect)
    assert not problems, "\n".join(problems)
    # The whole request is valid: it is the cuts that are refused.
    code, details, reply = send(seeded.client, ALLOCATE, full)
    assert code == SC.OK, details
    lease = P.AllocateResponse.FromString(reply).lease
    assert lease.owner == "truncated-owner"
    assert list(lease.addresses) == ["2001:db8:1::77", "192.0.2.77"]


def test_an_apply_pool_request_cut_at_every_byte_is_refused(world, seeded, pb):
    P = pb.ipam
    world.spoiled = True  # the whole request, sent last, creates a pool
    # The pool's name last: a cut inside the pool either fails to parse or lacks the name.
    pool = P.Pool(space="default", blocks=["198.51.100.64/26", "2001:db8:2::/64"],
                  search_order=P.SEARCH_ORDER_DESC, skip_end_ips=True, avoid_buggy_ips=True,
                  allow_share=True).SerializeToString(deterministic=True) + ld(1, "cutpool")
    full = ld(1, pool)

    def expect(parsed):
        # Only the empty prefix parses: the outer message has one field.
        assert not parsed.HasField("pool")
        return INVALID, ["ApplyPool needs a pool"]

    problems = truncation_fails(seeded, pb, "/ipam.v1.Ipam/ApplyPool", P.ApplyPoolRequest, full,
                                expect)
    assert not problems, "\n".join(problems)
    # The inner pool cut at field boundaries (wrapped whole) lacks its name.
    inner_problems = []
    for cut in range(len(pool)):
        try:
            parsed = P.Pool.FromString(pool[:cut])
        except DecodeError:
            continue
        assert parsed.name == ""
        before = snapshot(seeded.client, pb)
        code, details, _ = send(seeded.client, "/ipam.v1.Ipam/ApplyPool", ld(1, pool[:cut]))
        if code != SC.INVALID_ARGUMENT or "invalid pool name `'" not in details:
            inner_problems.append(f"pool cut at {cut}: {code.name} {details!r}")
        if snapshot(seeded.client, pb) != before:
            inner_problems.append(f"pool cut at {cut}: state changed")
    assert not inner_problems, "\n".join(inner_problems)
    code, details, _ = send(seeded.client, "/ipam.v1.Ipam/ApplyPool", full)
    assert code == SC.OK, details


# --------------------------------------------------------------------------
# ipamctl: bad flags never reach ipamd; bad values ipamd checks come back named.
# --------------------------------------------------------------------------

USAGE = 2

CTL_CASES = [
    # (id, args, exit code, substrings of stderr)
    ("ttl-word", ["allocate", "--pool", "lan", "--owner", "n1", "--ttl", "soon"], USAGE,
     ["--ttl `soon'"]),
    ("ttl-negative", ["allocate", "--pool", "lan", "--owner", "n1", "--ttl", "-1"], USAGE,
     ["--ttl `-1'"]),
    ("ttl-over-ten-years", ["allocate", "--pool", "lan", "--owner", "n1", "--ttl",
                            str(MAX_TTL + 1)], USAGE, [f"--ttl `{MAX_TTL + 1}'", "out of range"]),
    ("ttl-over-uint64", ["renew", "--owner", "b", "--ttl", "99999999999999999999999"], USAGE,
     ["--ttl `99999999999999999999999'"]),
    ("ttl-hex", ["renew", "--owner", "b", "--ttl", "0x10"], USAGE, ["--ttl `0x10'"]),
    ("ttl-empty", ["renew", "--owner", "b", "--ttl", ""], USAGE, ["--ttl `'"]),
    ("port-0", ["allocate", "--pool", "share", "--owner", "n1", "--port", "tcp/0"], USAGE,
     ["--port `tcp/0'"]),
    ("port-65536", ["allocate", "--pool", "share", "--owner", "n1", "--port", "udp/65536"],
     USAGE, ["--port `udp/65536'"]),
    ("port-no-protocol", ["allocate", "--pool", "share", "--owner", "n1", "--port", "80"],
     USAGE, ["--port `80'"]),
    ("port-icmp", ["allocate", "--pool", "share", "--owner", "n1", "--port", "icmp/1"], USAGE,
     ["--port `icmp/1'"]),
    ("port-empty-number", ["allocate", "--pool", "share", "--owner", "n1", "--port", "tcp/"],
     USAGE, ["--port `tcp/'"]),
    ("port-negative", ["allocate", "--pool", "share", "--owner", "n1", "--port", "tcp/-80"],
     USAGE, ["--port `tcp/-80'"]),
    ("port-trailing-junk", ["allocate", "--pool", "share", "--owner", "n1", "--port",
                            "tcp/80x"], USAGE, ["--port `tcp/80x'"]),
    ("family-ipv5", ["allocate", "--pool", "lan", "--owner", "n1", "--family", "ipv5"], USAGE,
     ["--family `ipv5'"]),
    ("family-number", ["allocate", "--pool", "lan", "--owner", "n1", "--family", "99"], USAGE,
     ["--family `99'"]),
    ("family-empty", ["allocate", "--pool", "lan", "--owner", "n1", "--family", ""], USAGE,
     ["--family `'"]),
    ("family-upper-case", ["allocate", "--pool", "lan", "--owner", "n1", "--family", "IPV4"],
     USAGE, ["--family `IPV4'"]),
    ("primary-dual", ["allocate", "--pool", "lan", "--owner", "n1", "--family",
                      "require-dual", "--primary", "prefer-dual"], USAGE,
     ["--primary `prefer-dual'"]),
    ("order-random", ["pool", "apply", "np", "--block", "198.51.100.64/26", "--order",
                      "random"], USAGE, ["--order `random'"]),
    ("label-without-equals", ["allocate", "--pool", "lan", "--owner", "n1", "--label", "app"],
     USAGE, ["--label `app'"]),
    ("label-twice", ["allocate", "--pool", "lan", "--owner", "n1", "--label", "a=1",
                     "--label", "a=2"], USAGE, ["--label `a=2'"]),
    ("block-empty", ["pool", "apply", "np", "--block", ""], USAGE, ["--block `'"]),
    ("owner-empty", ["allocate", "--pool", "lan", "--owner", ""], USAGE, ["--owner `'"]),
    ("from-revision-negative", ["watch", "--from-revision", "-5"], USAGE,
     ["--from-revision `-5'"]),
    # Values only ipamd can judge: its status code is the exit status.
    ("block-prefix-33", ["pool", "apply", "np", "--block", "192.0.2.0/33"], 3,
     ["192.0.2.0/33"]),
    ("block-reversed-range", ["pool", "apply", "np", "--block", "192.0.2.9-192.0.2.1"], 3,
     ["192.0.2.9-192.0.2.1", "starts after it ends"]),
    ("block-mixed-families", ["pool", "apply", "np", "--block", "192.0.2.1-2001:db8::1"], 3,
     ["mixes IPv4 and IPv6"]),
    ("block-word", ["pool", "apply", "np", "--block", "192.0.2.0/24", "--block", "lots"], 3,
     ["lots"]),
    ("block-bad-on-existing-pool", ["pool", "apply", "lan", "--block", "2001:db8::/200"], 3,
     ["2001:db8::/200"]),
    ("address-bad", ["allocate", "--pool", "lan", "--owner", "n1", "--address",
                     "192.0.2.300"], 3, ["192.0.2.300"]),
    ("addresses-three", ["allocate", "--pool", "lan", "--owner", "n1", "--address",
                         "192.0.2.77", "--address", "192.0.2.78", "--address",
                         "2001:db8:1::77"], 3, ["at most two addresses"]),
    ("owner-with-space", ["allocate", "--pool", "lan", "--owner", "my web"], 3,
     ["invalid owner `my web'"]),
    ("owner-too-long", ["allocate", "--pool", "lan", "--owner", "o" * 300], 3,
     ["invalid owner `" + "o" * 64]),
    ("pool-unknown", ["allocate", "--pool", "nope", "--owner", "n1"], 5,
     ["pool `nope' not found"]),
    ("pool-name-bad", ["pool", "apply", "my pool", "--block", "198.51.100.64/26"], 3,
     ["invalid pool name `my pool'"]),
    ("space-bad", ["pool", "apply", "np", "--block", "198.51.100.64/26", "--space", "a b"], 3,
     ["invalid space `a b'"]),
    ("family-ipv6-from-ipv4-pool", ["allocate", "--pool", "v4", "--owner", "n1", "--family",
                                    "ipv6"], 9, ["pool `v4' has no IPv6 addresses"]),
    ("sharing-key-bad", ["allocate", "--pool", "share", "--owner", "n1", "--port", "tcp/1",
                         "--sharing-key", "a key"], 3, ["invalid sharing key `a key'"]),
    ("label-value-control", ["allocate", "--pool", "lan", "--owner", "n1", "--label",
                             "k=a\x01b"], 3, ["invalid value for label `k'"]),
    ("release-unknown", ["release", "--owner", "nobody"], 5, ["owner `nobody' holds no lease"]),
    ("delete-with-leases", ["pool", "delete", "lan"], 9, ["pool `lan' has 2 leases"]),
]


@pytest.mark.parametrize("case", CTL_CASES, ids=[c[0] for c in CTL_CASES])
def test_bad_ipamctl_flags_exit_non_zero_name_the_value_and_change_nothing(seeded, pb,
                                                                         ipamctl_path, case):
    _, args, want_code, wants = case
    before = snapshot(seeded.client, pb)
    env = dict(os.environ)
    env.pop("IPAMD_ADDR", None)
    r = subprocess.run([str(ipamctl_path), "--server", seeded.target, *args],
                       capture_output=True, text=True, env=env, timeout=CMD_TIMEOUT)
    after = snapshot(seeded.client, pb)
    assert r.returncode == want_code, f"exit {r.returncode}, stderr: {r.stderr!r}"
    assert r.stderr.startswith("ipamctl: "), r.stderr
    for w in wants:
        assert w in r.stderr, f"stderr {r.stderr!r} does not name {w!r}"
    if want_code == USAGE:
        assert "usage: ipamctl" in r.stderr
    assert r.stdout == ""
    assert after == before, f"state changed: {describe_diff(before, after, pb)}"


# --------------------------------------------------------------------------
# The pools file: a bad one stops ipamd at start and leaves the data as it was.
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded_data_dir(tmp_path_factory, pb, ipamd_path):
    """A data directory holding the seeded state (ipamd stopped), and its snapshot."""
    workdir = tmp_path_factory.mktemp("bad-input-template")
    d = Daemon(ipamd_path, workdir, pb)
    try:
        d.start()
        seed(d.client, pb)
        snap = snapshot(d.client, pb)
        d.stop()
    finally:
        d.cleanup()
    return d.data_dir, snap


def tree(path):
    """Every file under path with its bytes (the LOCK file is empty and stays)."""
    return {str(p.relative_to(path)): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


V4_ONLY_BLOCKS = "blocks = 198.51.100.0/28\nsearch-order = desc\n"
MANY = ", ".join(f"2001:db8:{i >> 16:x}:{i & 0xffff:x}::/64" for i in range(100000))

# (id, file text or None for a missing file, line or None, substrings of the message)
# Syntax and key values are reported at their own line; what is checked when the pool
# is applied (its name, space, block addresses, block count) at its [pool NAME] line,
# with the pool and the value named (as test_daemon.py expects too).
CONFIG_CASES = [
    ("unknown-key", "[pool lan]\nblocks = 192.0.2.0/24\ncolour = blue\n", 3,
     ["unknown key `colour'"]),
    ("prefix-33", "[pool np]\nblocks = 192.0.2.0/33\n", 1, ["192.0.2.0/33"]),
    ("reversed-range", "# reversed\n[pool np]\nblocks = 192.0.2.9-192.0.2.1\n", 2,
     ["range `192.0.2.9-192.0.2.1' starts after it ends"]),
    ("mixed-range", "[pool np]\nblocks = 192.0.2.1 - 2001:db8::1\n", 1,
     ["mixes IPv4 and IPv6"]),
    ("bad-address", "[pool np]\nblocks = 192.0.2.0/24, 10.0.0.256/32\n", 1, ["10.0.0.256"]),
    ("empty-entry", "[pool np]\nblocks = 192.0.2.0/24,,198.51.100.0/24\n", 2,
     ["empty entry in blocks"]),
    ("empty-blocks", "[pool np]\nblocks =\n", 2, ["blocks"]),
    ("no-blocks", "\n\n[pool np]\nsearch-order = desc\n", 3, ["pool `np' has no blocks"]),
    ("bad-order", "[pool np]\nblocks = 192.0.2.0/24\nsearch-order = random\n", 3,
     ["search-order `random' is not asc or desc"]),
    ("bad-bool", "[pool np]\nblocks = 192.0.2.0/24\nskip-end-ips = maybe\n", 3,
     ["skip-end-ips `maybe' is not true or false"]),
    ("bad-pool-name", "[pool bad name]\nblocks = 192.0.2.0/24\n", 1,
     ["invalid pool name `bad name'"]),
    ("bad-space", "[pool np]\nblocks = 192.0.2.0/24\nspace = a b\n", 1,
     ["invalid space `a b'"]),
    ("section-unclosed", "[pool np\nblocks = 192.0.2.0/24\n", 1,
     ["malformed section header `[pool np'"]),
    ("section-unknown", "[range np]\nblocks = 192.0.2.0/24\n", 1, ["unknown section `[range np]'"]),
    ("key-outside-section", "blocks = 192.0.2.0/24\n", 1, ["`blocks' outside a [pool NAME]"]),
    ("no-equals", "[pool np]\nblocks 192.0.2.0/24\n", 2,
     ["expected `key = value', got `blocks 192.0.2.0/24'"]),
    ("pool-twice", "[pool np]\nblocks = 192.0.2.0/24\n[pool np]\nblocks = 192.0.2.0/24\n", 3,
     ["pool `np' is declared twice (first at line 1)"]),
    ("too-many-blocks", f"[pool np]\nblocks = {MANY}\n", 1,
     ["pool `np' has 100000 blocks, at most 1024"]),
    ("nul-in-a-value", "[pool np]\nblocks = 192.0.2.0/24\x00, junk\n", 2,
     ["the line holds a NUL byte"]),
    ("binary-garbage", "\x7fELF\x02\x01\x01\x00\x00\x00", 1, ["the line holds a NUL byte"]),
    # A good pool that changes an existing one, then a bad one: nothing is applied.
    ("good-then-bad", "[pool v4]\nblocks = 198.51.100.0/24\n\n[pool np]\nblocks = nowhere\n",
     4, ["pool `np'", "nowhere"]),
    # Valid text, refused when applied: moving a pool with leases to another space.
    ("space-move-with-leases", f"[pool v4]\n{V4_ONLY_BLOCKS}space = green\n", 1,
     ["pool `v4' has 1 leases in space `default'"]),
    ("missing-file", None, None, ["No such file or directory"]),
]


def run_to_exit(ipamd_path, d, conf):
    """Runs ipamd with the pools file, expecting it to exit by itself; returns
    (exit code, stderr).  If it starts serving instead (its socket appears, which
    happens only after the file is applied), it is stopped and the test fails."""
    errpath = d.workdir / "ipamd.stderr.config"
    with open(errpath, "wb") as errf:
        proc = subprocess.Popen([str(ipamd_path), "--listen", d.target, "--data-dir",
                                 str(d.data_dir), "--config", str(conf)],
                                stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
    try:
        deadline = time.monotonic() + CMD_TIMEOUT
        while proc.poll() is None:
            if os.path.exists(str(d.socket)) or time.monotonic() > deadline:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=CMD_TIMEOUT)
                err = errpath.read_text(errors="replace")
                pytest.fail(f"ipamd accepted the pools file and started serving:\n{err}",
                            pytrace=False)
            time.sleep(0.01)  # poll interval for the exit or the socket, not a readiness wait
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CMD_TIMEOUT)
    return proc.returncode, errpath.read_text(errors="replace")


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_pools_file_exits_1_names_file_and_line_and_leaves_the_data(
        seeded_data_dir, tmp_path, pb, ipamd_path, case):
    _, text, line, wants = case
    template, snap = seeded_data_dir
    d = Daemon(ipamd_path, tmp_path / "ipamd", pb)
    (tmp_path / "ipamd").mkdir()
    shutil.copytree(template, d.data_dir)
    conf = tmp_path / "pools.conf"
    if text is not None:
        conf.write_bytes(text.encode("utf-8", "surrogateescape"))
    files_before = tree(d.data_dir)
    try:
        code, err = run_to_exit(ipamd_path, d, conf)
        assert code == 1, f"exit {code}, stderr: {err[-2000:]!r}"
        where = f"{conf}:{line}: " if line is not None else f"{conf}: "
        assert where in err, f"stderr {err[-2000:]!r} does not say {where!r}"
        for w in wants:
            assert w in err, f"stderr {err[-2000:]!r} does not name {w!r}"
        files_after = tree(d.data_dir)
        added = sorted(files_after.keys() - files_before.keys())
        removed = sorted(files_before.keys() - files_after.keys())
        changed = sorted(k for k in files_before.keys() & files_after.keys()
                         if files_before[k] != files_after[k])
        assert not (added or removed or changed), (
            f"the data directory changed: added {added}, removed {removed}, changed "
            f"{changed}; ipamd's stderr:\n{err[-2000:]}")
        # And what a restart without the file serves is the state from before.
        d.start()
        assert snapshot(d.client, pb) == snap
        d.stop()
    finally:
        d.cleanup()
