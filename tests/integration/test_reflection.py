"""gRPC server reflection: what grpcurl, grpcui, Postman and evans ask first.

The client's messages are generated from the official definitions Debian ships in
grpc-proto (/usr/share/grpc-proto), not from the project's proto/, so a wrong
field number on either side shows up here; another test checks the project's
copies of the standard protos (health, reflection) are the official ones, field
for field. The descriptors ipamd serves are compared with what protoc makes of
proto/, and loaded into a fresh protobuf descriptor pool, as a generic client does.
"""
import queue
import subprocess
import threading

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

import ipam_client

OFFICIAL = ipam_client.Path("/usr/share/grpc-proto")
SERVICES = {"ipam.v1.Ipam", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"}
NOT_FOUND, INVALID_ARGUMENT = 5, 3


def descriptor_set(include, files, out):
    subprocess.run(["protoc", f"-I{include}", f"--descriptor_set_out={out}", *files],
                   check=True, capture_output=True, timeout=60)
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return {f.name: f for f in fds.file}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The official reflection messages, generated from grpc-proto: {version: module}."""
    out = tmp_path_factory.mktemp("official-gen")
    mods = {}
    for v in ("v1", "v1alpha"):
        rel = f"grpc/reflection/{v}/reflection.proto"
        subprocess.run(["protoc", f"-I{OFFICIAL}", f"--python_out={out}", rel], check=True,
                       capture_output=True, timeout=60)
        # `grpc` on sys.path is grpcio: load the generated file under a private name.
        mods[v] = ipam_client._load_module_from_file(
            f"official_reflection_{v}_pb2", out / "grpc" / "reflection" / v / "reflection_pb2.py")
    return mods


class Stream:
    """A ServerReflectionInfo stream: ask() sends one request and returns its answer."""

    def __init__(self, daemon, mod, version="v1"):
        self.mod = mod
        self.channel = grpc.insecure_channel(daemon.target)
        call = self.channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=mod.ServerReflectionResponse.FromString)
        self.requests = queue.Queue()
        self.responses = call(iter(self.requests.get, None), timeout=30)
        self.answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for r in self.responses:
                self.answers.put(r)
            self.answers.put(None)
        except grpc.RpcError as e:
            self.answers.put(e)

    def send(self, req):
        self.requests.put(req)

    def next(self):
        return self.answers.get(timeout=30)

    def ask(self, **fields):
        req = self.mod.ServerReflectionRequest(**fields)
        self.send(req)
        r = self.next()
        assert isinstance(r, self.mod.ServerReflectionResponse), r
        assert r.original_request == req
        return r

    def close(self):
        self.requests.put(None)
        end = self.next()
        self.channel.close()
        return end


@pytest.fixture
def stream(ipamd, official):
    s = Stream(ipamd, official["v1"])
    yield s
    assert s.close() is None, "the stream ends OK when the client half-closes"


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_list_services_names_every_service_on_both_versions(ipamd, official, version):
    s = Stream(ipamd, official[version], version)
    r = s.ask(host="h", list_services="*")
    assert r.valid_host == "h"
    assert r.WhichOneof("message_response") == "list_services_response"
    assert {x.name for x in r.list_services_response.service} == SERVICES
    assert s.close() is None


def test_the_served_files_are_what_protoc_makes_of_proto(stream, tmp_path):
    ours = descriptor_set(ipam_client.PROTO_DIR,
                          [ipam_client.IPAM_PROTO, ipam_client.HEALTH_PROTO,
                           "grpc/reflection/v1/reflection.proto",
                           "grpc/reflection/v1alpha/reflection.proto"], tmp_path / "ours.pb")
    for sym, name in [("ipam.v1.Ipam", "ipam/v1/ipam.proto"),
                      ("grpc.health.v1.Health", "grpc/health/v1/health.proto"),
                      ("grpc.reflection.v1.ServerReflection",
                       "grpc/reflection/v1/reflection.proto"),
                      ("grpc.reflection.v1alpha.ServerReflection",
                       "grpc/reflection/v1alpha/reflection.proto")]:
        r = stream.ask(file_containing_symbol=sym)
        files = r.file_descriptor_response.file_descriptor_proto
        assert len(files) == 1, f"{name} imports nothing, so it comes alone"
        got = descriptor_pb2.FileDescriptorProto.FromString(files[0])
        assert got == ours[name]


def test_a_generic_client_can_build_every_method_from_what_is_served(stream, pb):
    pool = descriptor_pool.DescriptorPool()
    for svc in sorted(SERVICES):
        r = stream.ask(file_containing_symbol=svc)
        for raw in r.file_descriptor_response.file_descriptor_proto:
            fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
            try:
                pool.FindFileByName(fdp.name)
            except KeyError:
                pool.Add(fdp)
    ipam = pool.FindServiceByName("ipam.v1.Ipam")
    want = pb.ipam.DESCRIPTOR.services_by_name["Ipam"]
    assert [(m.name, m.input_type.full_name, m.output_type.full_name, m.server_streaming)
            for m in ipam.methods] == \
        [(m.name, m.input_type.full_name, m.output_type.full_name, m.server_streaming)
         for m in want.methods]
    assert pool.FindMethodByName("grpc.health.v1.Health.Watch").output_type.full_name == \
        "grpc.health.v1.HealthCheckResponse"


@pytest.mark.parametrize("symbol,file", [
    ("ipam.v1.Ipam.Allocate", "ipam/v1/ipam.proto"),       # a method
    ("ipam.v1.AllocateRequest", "ipam/v1/ipam.proto"),     # a message
    (".ipam.v1.AllocateRequest", "ipam/v1/ipam.proto"),    # as descriptors write type names
    ("grpc.health.v1.HealthCheckResponse.ServingStatus",   # a nested enum
     "grpc/health/v1/health.proto"),
    ("grpc.reflection.v1.ErrorResponse", "grpc/reflection/v1/reflection.proto"),
])
def test_every_kind_of_symbol_finds_its_file(stream, symbol, file):
    r = stream.ask(file_containing_symbol=symbol)
    files = r.file_descriptor_response.file_descriptor_proto
    assert [descriptor_pb2.FileDescriptorProto.FromString(f).name for f in files] == [file]


def test_a_file_by_name(stream):
    r = stream.ask(file_by_filename="grpc/health/v1/health.proto")
    fdp = descriptor_pb2.FileDescriptorProto.FromString(
        r.file_descriptor_response.file_descriptor_proto[0])
    assert fdp.package == "grpc.health.v1" and fdp.service[0].name == "Health"


def test_errors_name_the_input_and_the_stream_goes_on(stream):
    cases = [
        (dict(file_by_filename="nope/v9/nope.proto"), NOT_FOUND,
         "file `nope/v9/nope.proto' not found"),
        (dict(file_containing_symbol="ipam.v1.NoSuchThing"), NOT_FOUND,
         "symbol `ipam.v1.NoSuchThing' not found"),
        (dict(file_containing_symbol="ipam.v1"), NOT_FOUND, "symbol `ipam.v1' not found"),
        (dict(all_extension_numbers_of_type="ipam.v1.Nope"), NOT_FOUND,
         "type `ipam.v1.Nope' not found"),
        (dict(host="only-a-host"), INVALID_ARGUMENT, "the request asks nothing"),
    ]
    for fields, code, message in cases:
        r = stream.ask(**fields)
        assert r.WhichOneof("message_response") == "error_response", fields
        assert r.error_response.error_code == code
        assert message in r.error_response.error_message
    # Still answering on the same stream.
    r = stream.ask(list_services="")
    assert {x.name for x in r.list_services_response.service} == SERVICES


def test_extensions_none_defined(stream, official):
    ext = official["v1"].ExtensionRequest(containing_type="ipam.v1.Pool", extension_number=100)
    r = stream.ask(file_containing_extension=ext)
    assert r.error_response.error_code == NOT_FOUND
    assert "extension 100 of `ipam.v1.Pool' not found" in r.error_response.error_message
    r = stream.ask(all_extension_numbers_of_type="ipam.v1.Pool")
    assert r.all_extension_numbers_response.base_type_name == "ipam.v1.Pool"
    assert list(r.all_extension_numbers_response.extension_number) == []


def test_many_requests_sent_at_once_are_answered_in_order(ipamd, official):
    mod = official["v1"]
    s = Stream(ipamd, mod)
    syms = sorted(SERVICES) * 25
    for sym in syms:
        s.send(mod.ServerReflectionRequest(file_containing_symbol=sym))
    for sym in syms:
        r = s.next()
        assert r.original_request.file_containing_symbol == sym
        assert r.WhichOneof("message_response") == "file_descriptor_response"
    assert s.close() is None


def test_an_undecodable_request_ends_the_stream_with_invalid_argument(ipamd, official, client):
    s = Stream(ipamd, official["v1"])
    s.send(b"\x22\x05ab")  # field 4 (a string) says 5 bytes, 2 follow
    end = s.next()
    assert isinstance(end, grpc.RpcError)
    assert end.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ServerReflectionRequest" in end.details()
    s.channel.close()
    assert client.health.Check(service="").status == 1


def test_reflection_streams_count_against_max_watchers(ipamd_factory, official):
    d = ipamd_factory(extra_args=["--max-watchers", "1"])
    s = Stream(d, official["v1"])
    s.ask(list_services="")
    err = d.client.Watch(from_revision=0).wait_error()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-watchers" in err.details()
    # And the other way round.
    assert s.close() is None
    w = d.client.watch_when_a_place_frees()
    try:
        late = Stream(d, official["v1"])
        late.send(official["v1"].ServerReflectionRequest(list_services=""))
        end = late.next()
        assert isinstance(end, grpc.RpcError), end
        assert end.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        late.channel.close()
    finally:
        w.close()


def test_shutdown_with_a_reflection_stream_open_is_prompt_and_clean(ipamd_factory, official):
    d = ipamd_factory()
    s = Stream(d, official["v1"])
    s.ask(list_services="")
    assert d.signal_stop() == 0
    end = s.next()
    assert isinstance(end, grpc.RpcError) and end.code() == grpc.StatusCode.UNAVAILABLE


def _wire_shape(fdp):
    """What a client depends on in a file: everything but options and comments."""
    f = descriptor_pb2.FileDescriptorProto()
    f.CopyFrom(fdp)
    f.ClearField("options")
    f.ClearField("source_code_info")
    return f


@pytest.mark.parametrize("name", ["grpc/health/v1/health.proto",
                                  "grpc/reflection/v1/reflection.proto",
                                  "grpc/reflection/v1alpha/reflection.proto"])
def test_the_standard_protos_are_the_official_ones(tmp_path, name):
    ours = descriptor_set(ipam_client.PROTO_DIR, [name], tmp_path / "ours.pb")[name]
    theirs = descriptor_set(OFFICIAL, [name], tmp_path / "theirs.pb")[name]
    assert _wire_shape(ours) == _wire_shape(theirs)
