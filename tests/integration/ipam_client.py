"""Test-side helpers: drive a real ipamd through a gRPC client the project did not write.

The client is Debian's python3-grpcio.  Message classes are generated at test time
from proto/ by the system `protoc --python_out` (never grpc_tools), and every RPC is
called generically (`channel.unary_unary('/ipam.v1.Ipam/Allocate', ...)`), with the
method table derived from the service descriptor, so nothing here is hand-written
against the API except the tests themselves.

Every blocking operation here has a bound: RPCs carry a deadline, streams are read
through a queue with a timeout, processes are waited for with a timeout.
"""

import importlib
import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
IPAM_PROTO = "ipam/v1/ipam.proto"
HEALTH_PROTO = "grpc/health/v1/health.proto"

# Deadline of one unary RPC, and the default wait for one stream message.
RPC_TIMEOUT = 10.0
# How long ipamd may take to start serving and to exit on SIGTERM.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
# A Unix socket path must fit in sun_path (108 bytes including the NUL).
MAX_SOCKET_PATH = 100

# Short reconnect backoff: while ipamd starts, the channel retries quickly instead of
# waiting gRPC's default one second or more between attempts.
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]


# --------------------------------------------------------------------------
# Message classes generated at test time.
# --------------------------------------------------------------------------

def _load_module_from_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def generate_protos(out_dir):
    """Runs the system protoc on proto/ into out_dir and imports the results.

    Returns a namespace with `ipam` (ipam.v1 messages) and `health`
    (grpc.health.v1 messages).  out_dir is put on sys.path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", IPAM_PROTO, HEALTH_PROTO]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}")
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    importlib.invalidate_caches()
    ipam_pb2 = importlib.import_module("ipam.v1.ipam_pb2")
    # The health messages live in package grpc.health.v1, but `grpc` on sys.path is
    # grpcio itself (a regular package, so no namespace merging): load the generated
    # file by path under a private module name.  Its descriptor keeps the canonical
    # file name grpc/health/v1/health.proto.
    health_pb2 = _load_module_from_file(
        "ipam_test_grpc_health_v1_health_pb2",
        out_dir / "grpc" / "health" / "v1" / "health_pb2.py")
    return types.SimpleNamespace(ipam=ipam_pb2, health=health_pb2, out_dir=out_dir)


# --------------------------------------------------------------------------
# Streams read with a timeout.
# --------------------------------------------------------------------------

class StreamTimeout(AssertionError):
    pass


class StreamEnded(AssertionError):
    pass


class StreamReader:
    """Reads a server stream in a background thread so every read has a timeout.

    The call itself also carries an overall deadline, so the thread always ends.
    """

    def __init__(self, call):
        self.call = call
        self._queue = queue.Queue()
        self.messages = []
        self.error = None  # the grpc.RpcError the stream ended with, if any
        self.ended = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for msg in self.call:
                self._queue.put(("msg", msg))
            self._queue.put(("end", None))
        except grpc.RpcError as e:
            self._queue.put(("error", e))

    def next(self, timeout=RPC_TIMEOUT):
        """The next message; raises the stream's RpcError, StreamEnded or StreamTimeout."""
        if self.ended:
            if self.error is not None:
                raise self.error
            raise StreamEnded("stream already ended")
        try:
            kind, value = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise StreamTimeout(f"no stream message within {timeout}s") from None
        if kind == "msg":
            self.messages.append(value)
            return value
        self.ended = True
        if kind == "error":
            self.error = value
            raise value
        raise StreamEnded("stream ended without error")

    def wait_error(self, timeout=RPC_TIMEOUT):
        """Skips messages until the stream fails; returns the grpc.RpcError."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeout(f"stream did not fail within {timeout}s; "
                                    f"got {len(self.messages)} messages")
            try:
                self.next(timeout=remaining)
            except grpc.RpcError as e:
                return e

    def close(self):
        self.call.cancel()
        self._thread.join(timeout=RPC_TIMEOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WatchReader(StreamReader):
    """A Watch stream: flattens the events of every message, in order."""

    def __init__(self, call):
        super().__init__(call)
        self.events = []
        self._pending = []

    def next(self, timeout=RPC_TIMEOUT):
        msg = super().next(timeout)
        self._pending.extend(msg.events)
        return msg

    def header(self, timeout=RPC_TIMEOUT):
        """The first message (created = true); its events, if any, are queued."""
        msg = self.next(timeout)
        return msg

    def next_event(self, timeout=RPC_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeout(f"no watch event within {timeout}s")
            self.next(remaining)
        ev = self._pending.pop(0)
        self.events.append(ev)
        return ev

    def take_events(self, n, timeout=RPC_TIMEOUT):
        deadline = time.monotonic() + timeout
        return [self.next_event(max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def wait_event(self, predicate, timeout=RPC_TIMEOUT):
        """The first event satisfying predicate; earlier events are kept in .events."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StreamTimeout(f"no matching watch event within {timeout}s; "
                                    f"saw {[_event_str(e) for e in self.events]}")
            ev = self.next_event(remaining)
            if predicate(ev):
                return ev


def _event_str(ev):
    name = ev.lease.owner if ev.lease.owner else ev.pool.name
    return f"{ev.revision}:{ev.Type.Name(ev.type)}:{name}:{ev.reason}"


# --------------------------------------------------------------------------
# The generic client.
# --------------------------------------------------------------------------

class _Method:
    """One RPC, called generically; the request is a message or keyword arguments."""

    def __init__(self, client, path, request_cls, response_cls, streaming, reader_cls):
        self._client = client
        self.path = path
        self.request_cls = request_cls
        self.response_cls = response_cls
        self.streaming = streaming
        self._reader_cls = reader_cls
        self._callable = None
        self._channel = None

    def _stub(self):
        channel = self._client.channel
        if self._callable is None or self._channel is not channel:
            make = channel.unary_stream if self.streaming else channel.unary_unary
            self._callable = make(self.path,
                                  request_serializer=self.request_cls.SerializeToString,
                                  response_deserializer=self.response_cls.FromString)
            self._channel = channel
        return self._callable

    def request(self, request=None, **fields):
        if request is None:
            return self.request_cls(**fields)
        if fields:
            raise TypeError("pass a request message or fields, not both")
        return request

    def __call__(self, request=None, *, timeout=None, **fields):
        req = self.request(request, **fields)
        if self.streaming:
            # A stream's deadline bounds the whole stream.
            return self._reader_cls(self._stub()(req, timeout=timeout or 60.0))
        return self._stub()(req, timeout=timeout or RPC_TIMEOUT)

    def future(self, request=None, *, timeout=None, **fields):
        assert not self.streaming
        return self._stub().future(self.request(request, **fields),
                                   timeout=timeout or RPC_TIMEOUT)


class _Service:
    """Attribute per RPC of one service, built from its descriptor."""

    def __init__(self, client, module, service_name, readers=None):
        service = module.DESCRIPTOR.services_by_name[service_name]
        readers = readers or {}
        for m in service.methods:
            if m.client_streaming:
                continue  # no client-streaming RPCs in this API
            setattr(self, m.name, _Method(
                client, f"/{service.full_name}/{m.name}",
                getattr(module, m.input_type.name), getattr(module, m.output_type.name),
                m.server_streaming, readers.get(m.name, StreamReader)))


class IpamClient:
    """A channel to ipamd with the Ipam and Health services.

    client.Allocate(pool="p", owner="a") -> AllocateResponse (raises grpc.RpcError);
    client.Watch(from_revision=0) -> WatchReader; client.health.Check(service="").
    The channel can be reopened (after a restart) without changing the object.
    """

    def __init__(self, target, pb, options=()):
        self.target = target
        self.pb = pb
        self.options = CHANNEL_OPTIONS + list(options)
        self.channel = None
        self.connect()
        ipam = _Service(self, pb.ipam, "Ipam", readers={"Watch": WatchReader})
        self.__dict__.update(vars(ipam))
        self.health = _Service(self, pb.health, "Health")

    def connect(self):
        self.close()
        self.channel = grpc.insecure_channel(self.target, options=self.options)

    def close(self):
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def wait_ready(self, timeout):
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def raw_unary(self, path, payload, timeout=RPC_TIMEOUT):
        """Sends payload bytes as they are to method path; returns the raw reply."""
        call = self.channel.unary_unary(path, request_serializer=None,
                                        response_deserializer=None)
        return call(payload, timeout=timeout)

    # Conveniences for the common calls.

    def apply_pool(self, name, blocks, **options):
        return self.ApplyPool(pool=self.pb.ipam.Pool(name=name, blocks=list(blocks), **options))

    def get_pool(self, name):
        return self.GetPool(name=name).pool

    def alloc(self, pool, owner, **fields):
        """Allocates and returns the lease."""
        return self.Allocate(pool=pool, owner=owner, **fields).lease

    def addresses(self, pool, owner, **fields):
        return list(self.alloc(pool, owner, **fields).addresses)

    def all_leases(self, page_size=0, **filters):
        """Every lease, following next_page_token; returns (leases, [revisions])."""
        leases, revisions, token = [], [], ""
        for _ in range(100000):
            resp = self.ListLeases(page_size=page_size, page_token=token, **filters)
            leases.extend(resp.leases)
            revisions.append(resp.revision)
            token = resp.next_page_token
            if not token:
                return leases, revisions
        raise AssertionError("ListLeases pagination never ended")

    def revision(self):
        return self.ListPools().revision

    def watch_when_a_place_frees(self, timeout=10.0):
        """Opens a Watch once the --max-watchers limit lets it in: a stream that just
        ended frees its place when ipamd has seen it end, a moment after the client
        has. Returns the open WatchReader."""
        deadline = time.monotonic() + timeout
        while True:
            w = self.Watch(from_revision=0)
            try:
                assert w.header().created
                return w
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert time.monotonic() < deadline, "the ended stream's place was never freed"
                time.sleep(0.05)


# --------------------------------------------------------------------------
# The daemon.
# --------------------------------------------------------------------------

def tcp_port(daemon, listen="127.0.0.1:0"):
    """The port ipamd bound for listen, from its log."""
    m = re.search(rf"serving on {re.escape(listen)} \(port (\d+), ", daemon.stderr_text())
    assert m, f"no port logged for {listen}:\n{daemon.stderr_text()}"
    return int(m.group(1))


def ipamd_binary():
    return Path(os.environ.get("IPAMD", REPO / "build" / "ipamd" / "ipamd"))


class Daemon:
    """One ipamd process on a Unix socket and a data directory under workdir."""

    def __init__(self, binary, workdir, pb, config=None, extra_args=()):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self._short_dir = None
        sock = self.workdir / "ipamd.sock"
        if len(str(sock)) > MAX_SOCKET_PATH:
            self._short_dir = tempfile.mkdtemp(prefix="ipamd-")
            sock = Path(self._short_dir) / "ipamd.sock"
        self.socket = sock
        self.target = f"unix:{sock}"
        self.data_dir = self.workdir / "data"
        self.config = config
        self.extra_args = list(extra_args)
        self.pb = pb
        self.proc = None
        self.starts = 0
        self.exit_codes = []
        self.client = None

    def argv(self):
        argv = [str(self.binary), "--listen", self.target, "--data-dir", str(self.data_dir)]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        return argv + self.extra_args

    def stderr_path(self, n=None):
        return self.workdir / f"ipamd.stderr.{self.starts if n is None else n}"

    def stderr_text(self):
        """The stderr of every run so far, each under a header."""
        parts = []
        for n in range(1, self.starts + 1):
            p = self.stderr_path(n)
            text = p.read_text(errors="replace") if p.exists() else ""
            parts.append(f"--- ipamd run {n} stderr ---\n{text}")
        return "\n".join(parts)

    def start(self, timeout=START_TIMEOUT):
        assert self.proc is None, "ipamd already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.stderr_path(), "wb") as err:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, cwd=self.workdir)
        if self.client is None:
            self.client = IpamClient(self.target, self.pb)
        else:
            self.client.connect()
        self._wait_serving(timeout)
        return self

    def _fail(self, what):
        raise AssertionError(f"ipamd {what}\nargv: {self.argv()}\n{self.stderr_text()}")

    def _wait_serving(self, timeout):
        """Bounded retry: channel readiness, then Health/Check until SERVING."""
        deadline = time.monotonic() + timeout
        last = None
        serving = self.pb.health.HealthCheckResponse.SERVING
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.exit_codes.append(code)
                self.proc = None
                self._fail(f"exited with {code} before serving (last error: {last})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"not SERVING within {timeout}s (last error: {last!r})")
            try:
                self.client.wait_ready(timeout=min(1.0, remaining))
                resp = self.client.health.Check(service="", timeout=min(2.0, remaining))
                if resp.status == serving:
                    return
                last = f"health status {resp.status}"
            except grpc.FutureTimeoutError:
                last = "channel not ready"
            except grpc.RpcError as e:
                last = f"{e.code()}: {e.details()}"

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal_stop(self, timeout=STOP_TIMEOUT, close_client=True):
        """SIGTERM, wait with a timeout; returns the exit code (killed: raises)."""
        assert self.proc is not None, "ipamd not running"
        if close_client and self.client is not None:
            self.client.close()
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
            self.exit_codes.append("killed")
            self._fail(f"did not exit within {timeout}s of SIGTERM (killed)")
        self.exit_codes.append(code)
        return code

    def stop(self, timeout=STOP_TIMEOUT, close_client=True):
        """SIGTERM and assert a clean exit (code 0)."""
        code = self.signal_stop(timeout, close_client)
        if code != 0:
            self._fail(f"exited with {code} on SIGTERM, expected 0")

    def restart(self):
        """Stops (asserting exit 0) and starts again on the same data directory."""
        self.stop()
        self.start()
        return self.client

    def kill(self):
        """Ends the process without checks (for cleanup after a failure)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc = None

    def cleanup(self):
        self.kill()
        if self.client is not None:
            self.client.close()
        if self._short_dir is not None:
            for p in Path(self._short_dir).iterdir():
                p.unlink()
            os.rmdir(self._short_dir)
            self._short_dir = None
