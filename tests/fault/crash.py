#!/usr/bin/python3
"""Crash safety: SIGKILL ipamd in the middle of an allocation storm, restart it on
the same data directory, and check that nothing acknowledged was lost.

    tests/fault/crash.py [--kills N] [--seed S] [--clients C]   (N defaults to 30)
    python3 -m pytest tests/fault/crash.py                       (the same, from pytest)

Client PROCESSES (multiprocessing, spawn) allocate (with and without TTL, IPv4 and
dual-stack, from two overlapping pools), renew and release leases of their own
owners.  Every result a client gets is appended to its own journal, flushed and
fsynced BEFORE the client counts the operation; an operation whose reply never
came is journalled as "unknown" (it may or may not have happened).

The driver kills ipamd with SIGKILL after a random number of acknowledged
operations (drawn from the seed; never a sleep), waits until every client has
noticed and paused, restarts ipamd on the same data directory and checks, from
the journals alone, with the clients quiet:

- every lease acknowledged and neither acknowledged-released nor expired is
  present with the same pool, addresses, expiry and revision;
- no acknowledged-released (or expired) lease came back, unless an operation
  after it may have re-created it;
- no lease exists that no client asked for, no address is held by two owners,
  and every pool's per-family "used" count equals the addresses leased in it;
- revisions never go backwards: ListLeases.revision never decreases across
  restarts, is at least every revision ever acknowledged, and no lease carries a
  revision above it.

Acknowledged replies are also checked as they are replayed (an owner that must
hold a lease may not be told NOT_FOUND or get a new one, Allocate of an owner
holding a lease returns that lease).  Clients then reconnect, resolve the owners
whose last operation is unknown with GetLease, and continue.  After the last kill
the clients stop, ipamd is checked, stopped with SIGTERM (exit 0), started and
checked again.  The last line printed is a summary; the exit status is 0 only if
every check passed.
"""

import argparse
import ipaddress
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import grpc  # noqa: E402

import ipam_client  # noqa: E402
from ipam_client import Daemon, IpamClient  # noqa: E402

# Two pools in one space; B overlaps the top half of A, so uniqueness across pools
# is exercised.  A allocates upwards, B downwards: they meet in the middle.
POOLS = {
    "crash-a": dict(blocks=["198.18.0.0/24", "2001:db8:c0::/120"], order="asc"),
    "crash-b": dict(blocks=["198.18.0.128/25", "2001:db8:c0::80/121"], order="desc"),
}
OWNERS_PER_CLIENT = 48      # 4 clients: 192 owners for 256 IPv4 addresses
ALLOC_TTLS = [0, 0, 0, 1, 2, 3]  # seconds; short, so leases expire during the run
RENEW_TTLS = [0, 1, 2, 4]
MEAN_KILL_DELAY = 150       # acknowledged operations between a restart and a kill

# Bounds.
RPC_DEADLINE = 10.0
PHASE_TIMEOUT = 60.0        # one wait of the driver or of a client
RESTART_TIMEOUT = 60.0
JOIN_TIMEOUT = 30.0
WRITE_MARGIN = 1.0          # a lease due this long before a write was sent is reaped
# (ipamd reaps due leases before it applies each batch of calls, not only after)
# ipamd stamps create and renew times with time(), a coarse clock that may lag the
# precise one (time.time() here) by a tick: an expiry can be a second earlier than
# time.time() at sending + ttl suggests.
COARSE_CLOCK_SLACK = 0.5


class CheckFailed(AssertionError):
    pass


# --------------------------------------------------------------------------
# Clients (separate processes).
# --------------------------------------------------------------------------

class Shared:
    """What the driver and the clients share; every field is read and written under
    cond's lock, and every change is announced with cond.notify_all()."""

    def __init__(self, ctx, nclients):
        self.cond = ctx.Condition()
        self.epoch = ctx.RawValue("q", 0)          # the ipamd run clients may use
        self.killed_epoch = ctx.RawValue("q", 0)   # the run the driver killed
        self.stop = ctx.RawValue("q", 0)
        self.acked = ctx.RawValue("q", 0)          # operations acknowledged, all clients
        self.unknown = ctx.RawValue("q", 0)
        self.paused = ctx.RawArray("q", nclients)  # epoch each client is paused in
        self.finished = ctx.RawArray("q", nclients)


class Journal:
    """Append-only JSON lines; each record is flushed and fsynced before append returns."""

    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8")

    def append(self, rec):
        self.f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


def lease_rec(lease):
    return {"pool": lease.pool, "addrs": list(lease.addresses), "ttl": lease.ttl_seconds,
            "exp": lease.expire_time, "rev": lease.revision, "crev": lease.create_revision}


# gRPC codes that are a definite answer from ipamd ("this did not happen, because").
# Anything else (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ...) leaves the outcome unknown.
DEFINITE = {"NOT_FOUND", "RESOURCE_EXHAUSTED", "ALREADY_EXISTS", "FAILED_PRECONDITION",
            "INVALID_ARGUMENT", "OUT_OF_RANGE"}


class ClientFatal(Exception):
    pass


def client_main(cid, target, workdir, seed, shared):
    """One client process: loops over runs of ipamd until told to stop."""
    try:
        _client(cid, target, Path(workdir), seed, shared)
    except BaseException:
        with open(Path(workdir) / f"client{cid}.error", "w") as f:
            f.write(traceback.format_exc())
        with shared.cond:
            shared.finished[cid] = 2
            shared.cond.notify_all()
        raise SystemExit(1)
    with shared.cond:
        shared.finished[cid] = 1
        shared.cond.notify_all()


def _client(cid, target, workdir, seed, shared):
    pb = ipam_client.generate_protos(workdir / f"gen-client{cid}")
    fam = pb.ipam.Family
    rng = random.Random(f"{seed}/client{cid}")
    journal = Journal(workdir / f"journal{cid}.jsonl")
    owners = [f"c{cid}/o{j:02d}" for j in range(OWNERS_PER_CLIENT)]
    pool_of = {o: ("crash-b" if j % 3 == 0 else "crash-a") for j, o in enumerate(owners)}
    family_of = {o: (fam.FAMILY_REQUIRE_DUAL_STACK if j % 2 else fam.FAMILY_IPV4)
                 for j, o in enumerate(owners)}
    held = set()        # owners this client believes hold a lease (only steers the mix)
    uncertain = set()   # owners whose last operation is unknown
    client = None
    epoch = 0
    cond = shared.cond

    def wait_for_next_run():
        nonlocal epoch
        with cond:
            ok = cond.wait_for(lambda: shared.stop.value or shared.epoch.value > epoch,
                               timeout=PHASE_TIMEOUT)
            if not ok:
                raise ClientFatal(f"client {cid}: no new ipamd run within {PHASE_TIMEOUT}s")
            if shared.stop.value:
                return False
            epoch = shared.epoch.value
            return True

    def killed():
        with cond:
            return shared.killed_epoch.value == epoch

    def pause(why):
        """The run ended under us: it must be because the driver killed ipamd."""
        with cond:
            if shared.killed_epoch.value != epoch:
                raise ClientFatal(f"client {cid}: operation failed while ipamd (run {epoch}) "
                                  f"was not being killed: {why}")
            shared.paused[cid] = epoch
            cond.notify_all()

    def acked():
        with cond:
            shared.acked.value += 1
            cond.notify_all()

    def call(op, owner, fn, req):
        """Runs one RPC; journals and returns ("ok", reply) / ("code", name) / ("unknown", why)."""
        rec = {"op": op, "owner": owner, "req": req, "epoch": epoch, "sent": time.time()}
        try:
            reply = fn()
        except grpc.RpcError as e:
            rec["recv"] = time.time()
            code = e.code().name
            if code in DEFINITE:
                rec.update(res="code", code=code, details=e.details())
                journal.append(rec)
                acked()
                return "code", code
            rec.update(res="unknown", code=code, details=e.details())
            journal.append(rec)
            with cond:
                shared.unknown.value += 1
            return "unknown", f"{code}: {e.details()}"
        rec["recv"] = time.time()
        rec["res"] = "ok"
        if op == "alloc":
            rec["created"] = reply.created
        rec["lease"] = lease_rec(reply.lease)
        journal.append(rec)
        acked()
        return "ok", reply

    def one_op():
        owner = rng.choice(owners)
        if owner not in held or rng.random() < 0.15:
            ttl = rng.choice(ALLOC_TTLS)
            req = {"pool": pool_of[owner], "family": int(family_of[owner]), "ttl": ttl}
            res, val = call("alloc", owner, lambda: client.Allocate(
                pool=pool_of[owner], owner=owner, family=family_of[owner], ttl_seconds=ttl,
                labels={"client": str(cid)}, timeout=RPC_DEADLINE), req)
        elif rng.random() < 0.5:
            ttl = rng.choice(RENEW_TTLS)
            res, val = call("renew", owner, lambda: client.Renew(
                owner=owner, ttl_seconds=ttl, timeout=RPC_DEADLINE), {"ttl": ttl})
        else:
            res, val = call("release", owner, lambda: client.Release(
                owner=owner, timeout=RPC_DEADLINE), {})
        if res == "unknown":
            uncertain.add(owner)
            return val
        if res == "ok" and val.lease.addresses and not isinstance(val, pb.ipam.ReleaseResponse):
            held.add(owner)
        else:
            held.discard(owner)
        return None

    def resolve():
        """GetLease for every owner whose last operation is unknown."""
        for owner in sorted(uncertain):
            res, val = call("get", owner, lambda: client.GetLease(
                owner=owner, timeout=RPC_DEADLINE), {})
            if res == "unknown":
                return val
            if res == "ok":
                held.add(owner)
            else:
                held.discard(owner)
            uncertain.discard(owner)
        return None

    def connect():
        """A fresh channel to the new run; bounded, and gives up if that run is killed."""
        nonlocal client
        if client is None:
            client = IpamClient(target, pb)
        else:
            client.connect()
        deadline = time.monotonic() + PHASE_TIMEOUT
        while True:
            try:
                client.wait_ready(timeout=0.1)
                return None
            except grpc.FutureTimeoutError:
                if killed():
                    return "killed while connecting"
                if time.monotonic() > deadline:
                    raise ClientFatal(f"client {cid}: cannot connect to run {epoch}")

    try:
        while wait_for_next_run():
            why = connect() or resolve()
            while why is None:
                if shared.stop.value:  # a plain read; the loop re-checks under the lock
                    break
                why = one_op()
            if why is not None:
                pause(why)
                continue
            with cond:
                if shared.stop.value:
                    break
    finally:
        journal.close()
        if client is not None:
            client.close()


# --------------------------------------------------------------------------
# The model the driver rebuilds from the journals.
# --------------------------------------------------------------------------

ABSENT = ("absent",)


def cand_present(pool, addrs, ttl, exp_lo, exp_hi, rev_lo, rev_hi):
    """A possible lease.  addrs None: any addresses; exp_hi/rev_hi None: unbounded."""
    return ("present", pool, None if addrs is None else tuple(addrs), ttl, exp_lo, exp_hi,
            rev_lo, rev_hi)


def cand_exact(lease):
    return cand_present(lease["pool"], lease["addrs"], lease["ttl"], lease["exp"], lease["exp"],
                        lease["rev"], lease["rev"])


def earliest_expiry(sent, ttl):
    """The earliest expire_time ipamd can give a lease created or renewed after sent."""
    return math.floor(sent - COARSE_CLOCK_SLACK) + ttl


def may_have_expired(c, t):
    """Could lease candidate c have been reaped by wall time t? (expired iff exp <= floor(now))"""
    return c[3] > 0 and c[4] <= math.floor(t)


def surely_expired(c, t, margin):
    """Was c surely gone by wall time t?  margin 0 for reads (reads run after reaping)."""
    return c[3] > 0 and c[5] is not None and c[5] <= math.floor(t) - margin


def may_be_absent(cands, t):
    return any(c == ABSENT or may_have_expired(c, t) for c in cands)


def matches(c, lease, t_lo, margin, identity_only=False):
    """Could lease (a journal or listing record) be candidate c at a time >= t_lo?
    identity_only compares pool and addresses, not ttl, expiry and revision."""
    if c == ABSENT or surely_expired(c, t_lo, margin):
        return False
    _, pool, addrs, ttl, exp_lo, exp_hi, rev_lo, rev_hi = c
    if pool != lease["pool"] or (addrs is not None and addrs != tuple(lease["addrs"])):
        return False
    if identity_only:
        return True
    if ttl != lease["ttl"]:
        return False
    if ttl:
        if lease["exp"] < exp_lo or (exp_hi is not None and lease["exp"] > exp_hi):
            return False
    elif lease["exp"] != 0:
        return False
    return rev_lo <= lease["rev"] and (rev_hi is None or lease["rev"] <= rev_hi)


def describe(cands):
    out = []
    for c in cands:
        if c == ABSENT:
            out.append("absent")
        else:
            _, pool, addrs, ttl, lo, hi, rlo, rhi = c
            out.append(f"{pool}:{'any' if addrs is None else ','.join(addrs)} ttl={ttl} "
                       f"exp=[{lo},{hi}] rev=[{rlo},{rhi}]")
    return " | ".join(out)


class Model:
    """Per-owner possible states, replayed from the journals incrementally."""

    def __init__(self, workdir, nclients):
        self.workdir = workdir
        self.offsets = [0] * nclients
        self.nclients = nclients
        self.cands = {}          # owner -> list of candidates
        self.max_acked_rev = 0   # highest revision any acknowledged reply carried
        self.records = 0
        self.acked = 0
        self.unknown = 0
        self.pending = {}        # owner -> (op, candidates before it) of its unknown operation
        self.applied = 0         # unknown operations a later GetLease showed had happened
        self.not_applied = 0     # ... had not happened
        self.changes = []        # (sent, recv, revision, where) of acknowledged changes
        self.violations = []

    def fail(self, msg):
        self.violations.append(msg)

    def check_revision_order(self, label):
        """Every acknowledged change has its own revision, above that of every change
        acknowledged before it was sent (by any client, in any earlier ipamd run)."""
        by_rev = {}
        for ch in self.changes:
            if ch[2] in by_rev:
                self.fail(f"{label}: revision {ch[2]} acknowledged twice: {by_rev[ch[2]][3]} "
                          f"and {ch[3]}")
            by_rev[ch[2]] = ch
        by_recv = sorted(self.changes, key=lambda ch: ch[1])
        i, top = 0, None
        for ch in sorted(self.changes, key=lambda ch: ch[0]):
            while i < len(by_recv) and by_recv[i][1] < ch[0]:
                if top is None or by_recv[i][2] > top[2]:
                    top = by_recv[i]
                i += 1
            if top is not None and ch[2] <= top[2]:
                self.fail(f"{label}: revision went back: {ch[3]} got {ch[2]} after {top[3]} "
                          f"had been acknowledged with {top[2]}")

    def replay(self):
        for cid in range(self.nclients):
            path = self.workdir / f"journal{cid}.jsonl"
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as f:
                f.seek(self.offsets[cid])
                data = f.read()
            # Clients are paused or stopped: every record is complete.
            assert data == "" or data.endswith("\n"), f"journal{cid} ends mid-record"
            self.offsets[cid] += len(data.encode())
            for line in data.splitlines():
                self.apply(json.loads(line))

    def apply(self, r):
        self.records += 1
        owner, op, res = r["owner"], r["op"], r["res"]
        cands = self.cands.setdefault(owner, [ABSENT])
        sent, recv = r["sent"], r.get("recv", r["sent"])
        where = f"{owner} {op} (run {r['epoch']}, sent {sent:.3f})"
        margin = 0.0 if op == "get" else WRITE_MARGIN
        if res == "unknown":
            self.unknown += 1
            self.pending.setdefault(owner, (op, cands))
            new = list(cands)
            if op == "alloc":
                ttl = r["req"]["ttl"]
                new.append(cand_present(r["req"]["pool"], None, ttl,
                                        earliest_expiry(sent, ttl) if ttl else 0,
                                        None if ttl else 0, 0, None))
            elif op == "release":
                new.append(ABSENT)
            elif op == "renew":
                for c in cands:
                    if c == ABSENT:
                        continue
                    ttl = r["req"]["ttl"] or c[3]
                    if ttl:
                        new.append(cand_present(c[1], c[2], ttl, earliest_expiry(sent, ttl),
                                                None, c[6], None))
            self.cands[owner] = list(dict.fromkeys(new))
            return
        self.acked += 1
        if owner in self.pending:
            self.classify(self.pending.pop(owner), r)
        if res == "ok":
            lease = r["lease"]
            self.max_acked_rev = max(self.max_acked_rev, lease["rev"])
            if op == "alloc" and r["created"]:
                ok = may_be_absent(cands, recv) and lease["crev"] == lease["rev"]
            elif op in ("alloc", "get"):
                # The lease the owner holds, exactly.
                ok = any(matches(c, lease, sent, margin) for c in cands)
            elif op == "release":
                # The lease as it was, but for revision: that of its release.
                ok = any(matches(c, lease, sent, margin, identity_only=True)
                         and lease["rev"] > c[6] for c in cands)
            elif lease["ttl"]:
                # Renewed: the same lease, with a new expiry and a new revision.
                ok = any(matches(c, lease, sent, margin, identity_only=True)
                         and lease["rev"] > c[6] for c in cands)
            else:
                # Nothing to renew (no TTL before, none given): the lease unchanged.
                ok = any(matches(c, lease, sent, margin) for c in cands)
            if not ok:
                self.fail(f"{where}: replied {lease} (created {r.get('created')}), which "
                          f"cannot follow {describe(cands)}")
            if (op == "alloc" and r["created"]) or op == "release" or \
                    (op == "renew" and lease["ttl"]):
                self.changes.append((sent, recv, lease["rev"], where))
            self.cands[owner] = [ABSENT] if op == "release" else [cand_exact(lease)]
        elif r["code"] in ("NOT_FOUND", "RESOURCE_EXHAUSTED"):
            if not may_be_absent(cands, recv):
                self.fail(f"{where}: {r['code']} ({r['details']}) although the owner must hold "
                          f"{describe(cands)}")
            self.cands[owner] = [ABSENT]
        else:
            self.fail(f"{where}: unexpected {r['code']}: {r['details']}")

    def classify(self, pending, r):
        """Counts whether an unknown operation had happened, when the next answer tells."""
        op, before = pending
        found = r["res"] == "ok"
        if r["op"] != "get" or len(before) != 1:
            return
        b = before[0]
        if op == "alloc" and b == ABSENT:
            happened = found
        elif op == "release" and b != ABSENT and not may_have_expired(b, r["recv"]):
            happened = not found
        elif op == "renew" and b != ABSENT and b[7] is not None and b[3] and found:
            happened = r["lease"]["rev"] > b[7]
        else:
            return
        if happened:
            self.applied += 1
        else:
            self.not_applied += 1


# --------------------------------------------------------------------------
# The driver.
# --------------------------------------------------------------------------

class Driver:
    def __init__(self, ipamd, workdir, kills, seed, nclients, mean_delay, verbose):
        self.workdir = Path(workdir)
        self.kills_wanted = kills
        self.seed = seed
        self.nclients = nclients
        self.mean_delay = mean_delay
        self.verbose = verbose
        self.rng = random.Random(f"{seed}/driver")
        self.pb = ipam_client.generate_protos(self.workdir / "gen-driver")
        self.daemon = Daemon(ipamd, self.workdir / "ipamd", self.pb)
        self.daemon.workdir.mkdir()
        self.model = Model(self.workdir, nclients)
        self.ctx = multiprocessing.get_context("spawn")
        self.shared = Shared(self.ctx, nclients)
        self.procs = []
        self.kills = 0
        self.checks = 0
        self.leases_checked = 0
        self.last_list_rev = 0
        self.epoch = 0

    def log(self, msg):
        if self.verbose:
            print(msg, flush=True)

    # -- clients ------------------------------------------------------------

    def start_clients(self):
        for cid in range(self.nclients):
            p = self.ctx.Process(target=client_main, name=f"crash-client-{cid}",
                                 args=(cid, self.daemon.target, str(self.workdir), self.seed,
                                       self.shared))
            p.start()
            self.procs.append(p)

    def client_errors(self):
        errs = []
        for cid, p in enumerate(self.procs):
            f = self.workdir / f"client{cid}.error"
            if f.exists():
                errs.append(f"client {cid}:\n{f.read_text()}")
            elif p.exitcode not in (None, 0):
                errs.append(f"client {cid} exited with {p.exitcode}")
        return errs

    def wait(self, what, predicate, timeout=PHASE_TIMEOUT):
        """Waits (on the shared condition, in bounded slices) for predicate, failing
        early if a client died."""
        deadline = time.monotonic() + timeout
        with self.shared.cond:
            while not predicate():
                if any(self.shared.finished[c] == 2 for c in range(self.nclients)) or \
                        any(p.exitcode not in (None, 0) for p in self.procs):
                    raise CheckFailed(f"a client failed while waiting for {what}:\n"
                                      + "\n".join(self.client_errors()))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CheckFailed(f"timed out after {timeout}s waiting for {what}")
                self.shared.cond.wait(timeout=min(remaining, 0.5))

    def resume_clients(self):
        with self.shared.cond:
            self.epoch += 1
            self.shared.epoch.value = self.epoch
            self.shared.cond.notify_all()

    def stop_clients(self):
        with self.shared.cond:
            self.shared.stop.value = 1
            self.shared.cond.notify_all()
        self.wait("the clients to stop",
                  lambda: all(self.shared.finished[c] for c in range(self.nclients)))
        for p in self.procs:
            p.join(JOIN_TIMEOUT)
        if self.client_errors():
            raise CheckFailed("\n".join(self.client_errors()))

    # -- ipamd --------------------------------------------------------------

    def setup_pools(self):
        c = self.daemon.client
        for name, spec in POOLS.items():
            order = (self.pb.ipam.SEARCH_ORDER_DESC if spec["order"] == "desc"
                     else self.pb.ipam.SEARCH_ORDER_ASC)
            c.apply_pool(name, spec["blocks"], search_order=order)

    def kill(self):
        with self.shared.cond:
            self.shared.killed_epoch.value = self.epoch
        proc = self.daemon.proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=RESTART_TIMEOUT)
        self.daemon.proc = None
        self.daemon.exit_codes.append("SIGKILL")
        self.kills += 1

    # -- checks -------------------------------------------------------------

    def check(self, label):
        """Compares ipamd (clients quiet) with every journal; raises CheckFailed."""
        self.model.replay()
        self.model.check_revision_order(label)
        c = self.daemon.client
        # Only expiries change ipamd now: read until ListPools and ListLeases show
        # the same revision, so pool counts and leases are one state.
        for _ in range(50):
            pools = c.ListPools(timeout=RPC_DEADLINE)
            t0 = time.time()
            resp = c.ListLeases(page_size=10000, timeout=RPC_DEADLINE)
            t1 = time.time()
            if pools.revision == resp.revision:
                break
        else:
            raise CheckFailed(f"{label}: ListPools and ListLeases never agreed on a revision")
        self.checks += 1
        v = self.model.violations
        rev = resp.revision
        if resp.next_page_token:
            v.append(f"{label}: more than 10000 leases?")
        if rev < self.last_list_rev:
            v.append(f"{label}: ListLeases.revision went back from {self.last_list_rev} to {rev}")
        if rev < self.model.max_acked_rev:
            v.append(f"{label}: ListLeases.revision {rev} is below revision "
                     f"{self.model.max_acked_rev} that was acknowledged")
        self.last_list_rev = max(self.last_list_rev, rev)

        actual = {}
        holder = {}
        for le in resp.leases:
            rec = lease_rec(le)
            actual[le.owner] = rec
            if le.revision > rev or le.create_revision > le.revision:
                v.append(f"{label}: {le.owner} has revision {le.create_revision}/{le.revision} "
                         f"but the list is at {rev}")
            if le.ttl_seconds and le.expire_time <= math.floor(t0):
                v.append(f"{label}: {le.owner} expired at {le.expire_time} but is still listed "
                         f"at {t0:.3f}")
            for a in le.addresses:
                if a in holder:
                    v.append(f"{label}: address {a} is held by {holder[a]} and {le.owner}")
                holder[a] = le.owner
        for owner, rec in actual.items():
            cands = self.model.cands.get(owner)
            if cands is None:
                v.append(f"{label}: lease of {owner} {rec} that no client ever asked for")
            elif not any(matches(cd, rec, t0, 0.0) for cd in cands):
                v.append(f"{label}: {owner} holds {rec}, which is none of the possible "
                         f"{describe(cands)}")
        for owner, cands in self.model.cands.items():
            if owner not in actual and not may_be_absent(cands, t1):
                v.append(f"{label}: the lease of {owner} is missing; it must be "
                         f"{describe(cands)} (listed at {t0:.3f}..{t1:.3f})")
        self.check_pools(label, pools, resp.leases)
        self.leases_checked += len(resp.leases)
        if v:
            raise CheckFailed(f"{len(v)} violation(s) at {label}:\n  " + "\n  ".join(v[:50]))

    def check_pools(self, label, pools, leases):
        nets = {p: [ipaddress.ip_network(b) for b in s["blocks"]] for p, s in POOLS.items()}
        addrs = [ipaddress.ip_address(a) for le in leases for a in le.addresses]
        for le in leases:
            for a in le.addresses:
                if not any(ipaddress.ip_address(a) in n for n in nets[le.pool]):
                    self.model.violations.append(f"{label}: {le.owner} holds {a} outside "
                                                 f"pool {le.pool}")
        seen = set()
        for p in pools.pools:
            if p.name not in nets:
                continue
            seen.add(p.name)
            for fam, stats in ((4, p.ipv4), (6, p.ipv6)):
                want = sum(1 for a in addrs if a.version == fam
                           and any(a in n for n in nets[p.name]))
                if int(stats.used) != want:
                    self.model.violations.append(
                        f"{label}: pool {p.name} reports {stats.used} IPv{fam} addresses used, "
                        f"the leases hold {want}")
            if p.leases != sum(1 for le in leases if le.pool == p.name):
                self.model.violations.append(f"{label}: pool {p.name} counts {p.leases} leases")
        if seen != set(nets):
            self.model.violations.append(f"{label}: pools missing: {set(nets) - seen}")

    # -- the run ------------------------------------------------------------

    def kill_delay(self):
        r = self.rng.random()
        if r < 0.1:
            return self.rng.randint(0, 3)  # right after the restart, while clients reconnect
        return self.rng.randint(1, 2 * self.mean_delay)

    def run(self):
        t_start = time.monotonic()
        self.start_clients()
        self.daemon.start(timeout=RESTART_TIMEOUT)
        self.setup_pools()
        self.resume_clients()
        for k in range(self.kills_wanted):
            with self.shared.cond:
                base = self.shared.acked.value
            target = base + self.kill_delay()
            self.wait(f"{target - base} operations before kill {k + 1}",
                      lambda: self.shared.acked.value >= target)
            self.kill()
            epoch = self.epoch
            self.wait(f"the clients to notice kill {k + 1}",
                      lambda: all(self.shared.paused[c] == epoch or self.shared.finished[c]
                                  for c in range(self.nclients)))
            self.daemon.start(timeout=RESTART_TIMEOUT)
            self.check(f"restart after kill {k + 1}")
            self.log(f"kill {k + 1}: {self.shared.acked.value} acknowledged, "
                     f"{len(self.model.cands)} owners, revision {self.last_list_rev}")
            self.resume_clients()
        self.stop_clients()
        self.check("the end (clients stopped)")
        code = self.daemon.signal_stop(timeout=RESTART_TIMEOUT)
        if code != 0:
            raise CheckFailed(f"ipamd exited with {code} on SIGTERM\n{self.daemon.stderr_text()}")
        self.daemon.start(timeout=RESTART_TIMEOUT)
        self.check("restart after SIGTERM")
        self.daemon.stop(timeout=RESTART_TIMEOUT)
        self.elapsed = time.monotonic() - t_start
        return self

    def summary(self):
        return (f"crash: {self.kills} kills, {self.model.acked} operations acknowledged, "
                f"{self.model.unknown} unknown ({self.model.applied} found applied, "
                f"{self.model.not_applied} not), {self.checks} checks of "
                f"{self.leases_checked} leases, revision {self.last_list_rev}, "
                f"{self.elapsed:.1f} s (seed {self.seed}, {self.nclients} clients)")

    def cleanup(self):
        with self.shared.cond:
            self.shared.stop.value = 1
            self.shared.cond.notify_all()
        for p in self.procs:
            p.join(JOIN_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join(JOIN_TIMEOUT)
        self.daemon.cleanup()


def run(kills=30, seed=None, clients=4, mean_delay=MEAN_KILL_DELAY, ipamd=None, keep=False,
        verbose=False):
    """Runs the whole scenario; returns the summary line or raises CheckFailed."""
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 32)
    ipamd = Path(ipamd or ipam_client.ipamd_binary()).resolve()
    if not (ipamd.is_file() and os.access(ipamd, os.X_OK)):
        raise CheckFailed(f"ipamd binary not found at {ipamd} (set IPAMD or build it first)")
    workdir = Path(tempfile.mkdtemp(prefix="ipamd-crash-"))
    driver = None
    try:
        driver = Driver(ipamd, workdir, kills, seed, clients, mean_delay, verbose)
        driver.run()
        return driver.summary()
    except BaseException as e:
        detail = ""
        if driver is not None:
            detail = (f"\nseed {seed}; work directory {workdir}"
                      f"{' (kept)' if keep else ' (removed; --keep keeps it)'}\n"
                      f"{driver.daemon.stderr_text()[-6000:]}")
        if isinstance(e, CheckFailed):
            raise CheckFailed(f"{e}{detail}") from None
        raise CheckFailed(f"{type(e).__name__}: {e}{detail}") from e
    finally:
        if driver is not None:
            driver.cleanup()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def test_acknowledged_leases_survive_sigkill_and_nothing_is_handed_out_twice():
    kills = int(os.environ.get("IPAM_CRASH_KILLS", "30"))
    seed = os.environ.get("IPAM_CRASH_SEED")
    print(run(kills=kills, seed=int(seed) if seed else None))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=30, help="SIGKILLs (default 30)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    ap.add_argument("--mean-delay", type=int, default=MEAN_KILL_DELAY,
                    help="mean acknowledged operations between restart and kill")
    ap.add_argument("--ipamd", default=None, help="ipamd binary (default $IPAMD)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    try:
        print(run(a.kills, a.seed, a.clients, a.mean_delay, a.ipamd, a.keep, a.verbose),
              flush=True)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
