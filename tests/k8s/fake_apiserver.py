#!/usr/bin/python3
"""A local stand-in for kube-apiserver, for the k8s-adapter tests.

It speaks the HTTP contract of the real server for the core/v1 subset the adapter
uses: services (with the status subresource), configmaps, events, namespaces
(implicit). Lists with selectors and pagination, watches (chunked JSON stream,
resourceVersion semantics, bookmarks, 410 Expired), get/create/update/patch
(merge, JSON and strategic merge patch)/delete, optimistic concurrency,
finalizers, Status objects for every error, bearer-token auth and RBAC-style
denials. See README.md next to this file for what is and is not implemented and
where each behaviour comes from.

Two ways to use it:

    srv = FakeApiServer(); srv.start()      # from Python (pytest): srv.url, srv.stop()
    python3 fake_apiserver.py --port 0 --print-url

Standard library only. Listens on 127.0.0.1 only.
"""

import argparse
import base64
import collections
import copy
import datetime
import http.server
import ipaddress
import json
import random
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeApiServer", "ApiError", "Request"]

# --------------------------------------------------------------------------------------
# constants

MAX_REQUEST_BODY = 3 * 1024 * 1024          # kube-apiserver MaxRequestBodyBytes
TOTAL_ANNOTATION_SIZE = 256 * 1024           # apimachinery TotalAnnotationSizeLimitB
CONFIGMAP_MAX_SIZE = 1024 * 1024             # core validation MaxSecretSize
OPTIMISTIC_LOCK_MSG = ("the object has been modified; please apply your changes "
                       "to the latest version and try again")
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may "
    "show up in the list.")
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"   # apiserver names.SimpleNameGenerator
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")

# at: time.monotonic() when the request arrived.
Request = collections.namedtuple("Request", "method path query content_type at",
                                 defaults=(None,))


def _now_rfc3339(ts):
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _now_micro(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?"
                      r"(Z|[+-]\d{2}:\d{2})$")


def _parse_time(s):
    """RFC 3339 as Go's time.Parse(time.RFC3339) accepts it; returns a datetime."""
    m = _TIME_RE.match(s)
    if not m:
        raise ValueError('parsing time "%s" as "2006-01-02T15:04:05Z07:00": cannot parse '
                         '"%s" as "2006"' % (s, s))
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    tz = m.group(8)
    if tz == "Z":
        tzinfo = datetime.timezone.utc
    else:
        sign = 1 if tz[0] == "+" else -1
        tzinfo = datetime.timezone(sign * datetime.timedelta(hours=int(tz[1:3]),
                                                             minutes=int(tz[4:6])))
    try:
        return datetime.datetime(y, mo, d, h, mi, sec, micro, tzinfo=tzinfo)
    except ValueError:
        raise ValueError('parsing time "%s": day out of range' % s) from None


# --------------------------------------------------------------------------------------
# JSON as Go's encoding/json reads and writes it

def _no_constant(name):
    raise ValueError("invalid character '%s' looking for beginning of value" % name[0])


def _parse_float(s):
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise ValueError("number %s out of range" % s)
    return v


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean_strings(v):
    """Lone surrogates become U+FFFD, as Go does when it decodes them."""
    if isinstance(v, str):
        return _SURROGATE.sub("\ufffd", v) if _SURROGATE.search(v) else v
    if isinstance(v, list):
        return [_clean_strings(x) for x in v]
    if isinstance(v, dict):
        return {_clean_strings(k): _clean_strings(x) for k, x in v.items()}
    return v


def json_loads(data):
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", errors="replace")
    v = json.loads(data, parse_constant=_no_constant, parse_float=_parse_float)
    return _clean_strings(v)


def json_dumps(v):
    """Compact JSON with Go's HTML-safe escaping of <, >, & and U+2028/U+2029."""
    s = json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_error_text(exc):
    if isinstance(exc, json.JSONDecodeError):
        return "invalid character at offset %d: %s" % (exc.pos, exc.msg)
    return str(exc)


def _strict_equal(a, b):
    """JSON equality (true != 1, unlike Python's ==)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b))
    return a == b


def _go_quote(s):
    return json.dumps(s, ensure_ascii=False)


# --------------------------------------------------------------------------------------
# errors: metav1.Status

class ApiError(Exception):
    """An error answered as a metav1.Status (also raised by the Python-side API)."""

    def __init__(self, code, reason, message, details=None, metadata=None, headers=None,
                 text=None):
        super().__init__("%d %s: %s" % (code, reason, message))
        self.text = text      # a plain-text body instead of a Status (http.Error)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.metadata = metadata or {}
        self.headers = headers or {}

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": dict(self.metadata),
              "status": "Failure", "message": self.message}
        if self.reason:
            st["reason"] = self.reason
        if self.details is not None:
            st["details"] = self.details
        st["code"] = self.code
        return st


def _details(name="", group="", kind="", uid="", causes=None, retry_after=0):
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    if uid:
        d["uid"] = uid
    if causes:
        d["causes"] = causes
    if retry_after:
        d["retryAfterSeconds"] = retry_after
    return d


def err_not_found(resource, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (resource, name),
                    _details(name=name, kind=resource))


def err_path_not_found():
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def err_already_exists(resource, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (resource, name),
                    _details(name=name, kind=resource))


def err_conflict(resource, name, why=OPTIMISTIC_LOCK_MSG):
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": %s' % (resource, name, why),
                    _details(name=name, kind=resource))


def err_bad_request(msg):
    return ApiError(400, "BadRequest", msg)


def err_method_not_allowed():
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource", {})


def err_unsupported_media_type():
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media "
                    "types include: " + ", ".join(PATCH_TYPES))


def err_unauthorized():
    return ApiError(401, "Unauthorized", "Unauthorized")


def err_expired(msg, cont=None):
    return ApiError(410, "Expired", msg, None, {"continue": cont} if cont else None)


def err_internal(msg):
    return ApiError(500, "InternalError", "Internal error occurred: %s" % msg,
                    _details(causes=[{"message": msg}]))


def err_too_large_rv(wanted, current):
    return ApiError(504, "Timeout", "Timeout: Too large resource version: %d, current: %d"
                    % (wanted, current),
                    _details(causes=[{"reason": "ResourceVersionTooLarge",
                                      "message": "Too large resource version"}],
                             retry_after=1))


def err_entity_too_large(msg):
    return ApiError(413, "RequestEntityTooLarge", "Request entity too large: %s" % msg)


def err_generic_422(server_message):
    # apierrors.NewGenericServerResponse(422, "", GroupResource{}, "", msg, 0, false), as
    # the patch handler answers a JSON patch that does not apply: the reason for the
    # failure (server_message) is not passed on, details stay empty
    return ApiError(422, "Invalid", "the server rejected our request due to an error in "
                    "our request", {})


_GENERIC = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    401: ("Unauthorized", "Unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "the server could not find the requested resource"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested "
                              "resource"),
    409: ("Conflict", "the server reported a conflict"),
    410: ("Expired", "the resource has expired"),
    422: ("Invalid", "the server rejected our request due to an error in our request"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
    502: ("", "the server responded with the status code 502 but did not return more "
              "information"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, "
                     "but may still be processing the request"),
}


def err_generic(code, reason=None, message=None, retry_after=None, body=None):
    """An injected failure. body: "status" (a Status object) or "text" (plain text, as
    the max-in-flight and priority-and-fairness filters answer 429 with http.Error);
    default "text" for 429, "status" otherwise."""
    r, m = _GENERIC.get(code, ("", "the server responded with the status code %d" % code))
    headers = {}
    details = None
    if code == 429 and retry_after is None:
        retry_after = 1
    if retry_after:
        headers["Retry-After"] = str(retry_after)
        details = _details(retry_after=retry_after)
    if body is None:
        body = "text" if code == 429 else "status"
    e = ApiError(code, r if reason is None else reason, m if message is None else message,
                 details, headers=headers)
    if body == "text":
        e.text = e.message + "\n"
    return e


class FieldError:
    TYPES = {"Required": ("Required value", "FieldValueRequired"),
             "Invalid": ("Invalid value", "FieldValueInvalid"),
             "NotSupported": ("Unsupported value", "FieldValueNotSupported"),
             "Duplicate": ("Duplicate value", "FieldValueDuplicate"),
             "Forbidden": ("Forbidden", "FieldValueForbidden"),
             "TooLong": ("Too long", "FieldValueTooLong"),
             "TooMany": ("Too many", "FieldValueTooMany")}
    _NO_VALUE = object()

    def __init__(self, typ, field, value=_NO_VALUE, detail=""):
        self.typ, self.field, self.value, self.detail = typ, field, value, detail

    def body(self):
        label = self.TYPES[self.typ][0]
        if self.typ in ("Required", "Forbidden", "TooLong") or self.value is self._NO_VALUE:
            s = label
        elif self.value is None:
            s = "%s: null" % label
        elif isinstance(self.value, bool):
            s = "%s: %s" % (label, "true" if self.value else "false")
        elif isinstance(self.value, (int, float)):
            s = "%s: %s" % (label, self.value)
        elif isinstance(self.value, str):
            s = "%s: %s" % (label, _go_quote(self.value))
        else:
            s = "%s: %s" % (label, json_dumps(self.value))
        if self.detail:
            s += ": " + self.detail
        return s

    def text(self):
        return "%s: %s" % (self.field, self.body())

    def cause(self):
        return {"reason": self.TYPES[self.typ][1], "message": self.body(), "field": self.field}


def Required(field, detail=""):
    return FieldError("Required", field, detail=detail)


def Invalid(field, value, detail=""):
    return FieldError("Invalid", field, value, detail)


def NotSupported(field, value, supported):
    return FieldError("NotSupported", field, value,
                      "supported values: " + ", ".join(_go_quote(s) for s in supported))


def Forbidden(field, detail):
    return FieldError("Forbidden", field, detail=detail)


def Duplicate(field, value):
    return FieldError("Duplicate", field, value)


def TooLong(field, limit):
    return FieldError("TooLong", field, detail="must have at most %d bytes" % limit)


def err_invalid(kind, name, errs, group=""):
    texts = []
    for e in errs:
        t = e.text()
        if t not in texts:
            texts.append(t)
    agg = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    qk = kind + ("." + group if group else "")
    return ApiError(422, "Invalid", '%s %s is invalid: %s' % (qk, _go_quote(name), agg),
                    _details(name=name, group=group, kind=kind,
                             causes=[e.cause() for e in errs]))


# --------------------------------------------------------------------------------------
# schemas: how Go decodes a JSON body into the typed object and encodes it back
# (field order, omitempty, pointers, nulls, dropped unknown fields, type errors)

class DecodeError(Exception):
    pass


class T:
    """A Go type: kind in str, int32, int64, bool, time, mtime, intstr, bytes, raw,
    map (elem), list (elem), ptr (elem), struct (goname, fields)."""

    def __init__(self, kind, elem=None, goname="", fields=()):
        self.kind, self.elem, self.goname, self.fields = kind, elem, goname, list(fields)

    def goname_of(self):
        return {"str": "string", "int32": "int32", "int64": "int64", "bool": "bool",
                "time": "v1.Time", "mtime": "v1.MicroTime", "intstr": "intstr.IntOrString",
                "bytes": "[]uint8", "raw": "json.RawMessage"}.get(self.kind) or (
            "map[string]" + self.elem.goname_of() if self.kind == "map" else
            "[]" + self.elem.goname_of() if self.kind == "list" else
            "*" + self.elem.goname_of() if self.kind == "ptr" else "v1." + self.goname)


STR, I32, I64, BOOL = T("str"), T("int32"), T("int64"), T("bool")
TIME, MTIME, INTSTR, BYTES, RAW = T("time"), T("mtime"), T("intstr"), T("bytes"), T("raw")


def MAP(e):
    return T("map", e)


def LIST(e):
    return T("list", e)


def PTR(e):
    return T("ptr", e)


def STRUCT(goname, *fields):
    # fields: (json name, type, omitempty)
    return T("struct", goname=goname, fields=fields)


_O, _N = True, False   # omitempty / not

OWNER_REF = STRUCT("OwnerReference", ("apiVersion", STR, _N), ("kind", STR, _N),
                   ("name", STR, _N), ("uid", STR, _N), ("controller", PTR(BOOL), _O),
                   ("blockOwnerDeletion", PTR(BOOL), _O))
MANAGED_FIELDS = STRUCT("ManagedFieldsEntry", ("manager", STR, _O), ("operation", STR, _O),
                        ("apiVersion", STR, _O), ("time", PTR(TIME), _O),
                        ("fieldsType", STR, _O), ("fieldsV1", PTR(RAW), _O),
                        ("subresource", STR, _O))
OBJECT_META = STRUCT(
    "ObjectMeta", ("name", STR, _O), ("generateName", STR, _O), ("namespace", STR, _O),
    ("selfLink", STR, _O), ("uid", STR, _O), ("resourceVersion", STR, _O),
    ("generation", I64, _O), ("creationTimestamp", TIME, _O),
    ("deletionTimestamp", PTR(TIME), _O), ("deletionGracePeriodSeconds", PTR(I64), _O),
    ("labels", MAP(STR), _O), ("annotations", MAP(STR), _O),
    ("ownerReferences", LIST(OWNER_REF), _O), ("finalizers", LIST(STR), _O),
    ("managedFields", LIST(MANAGED_FIELDS), _O))
SERVICE_PORT = STRUCT("ServicePort", ("name", STR, _O), ("protocol", STR, _O),
                      ("appProtocol", PTR(STR), _O), ("port", I32, _N),
                      ("targetPort", INTSTR, _O), ("nodePort", I32, _O))
SERVICE_SPEC = STRUCT(
    "ServiceSpec", ("ports", LIST(SERVICE_PORT), _O), ("selector", MAP(STR), _O),
    ("clusterIP", STR, _O), ("clusterIPs", LIST(STR), _O), ("type", STR, _O),
    ("externalIPs", LIST(STR), _O), ("sessionAffinity", STR, _O),
    ("loadBalancerIP", STR, _O), ("loadBalancerSourceRanges", LIST(STR), _O),
    ("externalName", STR, _O), ("externalTrafficPolicy", STR, _O),
    ("healthCheckNodePort", I32, _O), ("publishNotReadyAddresses", BOOL, _O),
    ("sessionAffinityConfig", PTR(STRUCT("SessionAffinityConfig", (
        "clientIP", PTR(STRUCT("ClientIPConfig", ("timeoutSeconds", PTR(I32), _O))), _O))),
     _O),
    ("ipFamilies", LIST(STR), _O), ("ipFamilyPolicy", PTR(STR), _O),
    ("allocateLoadBalancerNodePorts", PTR(BOOL), _O), ("loadBalancerClass", PTR(STR), _O),
    ("internalTrafficPolicy", PTR(STR), _O), ("trafficDistribution", PTR(STR), _O))
PORT_STATUS = STRUCT("PortStatus", ("port", I32, _N), ("protocol", STR, _N),
                     ("error", PTR(STR), _O))
LB_INGRESS = STRUCT("LoadBalancerIngress", ("ip", STR, _O), ("hostname", STR, _O),
                    ("ipMode", PTR(STR), _O), ("ports", LIST(PORT_STATUS), _O))
CONDITION = STRUCT("Condition", ("type", STR, _N), ("status", STR, _N),
                   ("observedGeneration", I64, _O), ("lastTransitionTime", TIME, _N),
                   ("reason", STR, _N), ("message", STR, _N))
SERVICE_STATUS = STRUCT(
    "ServiceStatus",
    ("loadBalancer", STRUCT("LoadBalancerStatus", ("ingress", LIST(LB_INGRESS), _O)), _O),
    ("conditions", LIST(CONDITION), _O))
SERVICE = STRUCT("Service", ("metadata", OBJECT_META, _O), ("spec", SERVICE_SPEC, _O),
                 ("status", SERVICE_STATUS, _O))
CONFIGMAP = STRUCT("ConfigMap", ("metadata", OBJECT_META, _O), ("immutable", PTR(BOOL), _O),
                   ("data", MAP(STR), _O), ("binaryData", MAP(BYTES), _O))
OBJECT_REF = STRUCT("ObjectReference", ("kind", STR, _O), ("namespace", STR, _O),
                    ("name", STR, _O), ("uid", STR, _O), ("apiVersion", STR, _O),
                    ("resourceVersion", STR, _O), ("fieldPath", STR, _O))
EVENT = STRUCT(
    "Event", ("metadata", OBJECT_META, _O), ("involvedObject", OBJECT_REF, _N),
    ("reason", STR, _O), ("message", STR, _O),
    ("source", STRUCT("EventSource", ("component", STR, _O), ("host", STR, _O)), _O),
    ("firstTimestamp", TIME, _O), ("lastTimestamp", TIME, _O), ("count", I32, _O),
    ("type", STR, _O), ("eventTime", MTIME, _O),
    ("series", PTR(STRUCT("EventSeries", ("count", I32, _O),
                          ("lastObservedTime", MTIME, _O))), _O),
    ("action", STR, _O), ("related", PTR(OBJECT_REF), _O),
    ("reportingComponent", STR, _N), ("reportingInstance", STR, _N))


def _jtype(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


class _Decoder:
    """Decodes JSON into the canonical (Go-encoded) form of a typed object."""

    def __init__(self):
        self.unknown = []   # paths of dropped unknown fields

    def fail(self, v, t, owner, path, number_literal=False):
        what = _jtype(v)
        if number_literal:
            what = "number %s" % (json.dumps(v),)
        raise DecodeError("json: cannot unmarshal %s into Go struct field %s.%s of type %s"
                          % (what, owner, path, t.goname_of()))

    def zero(self, t):
        if t.kind == "str":
            return ""
        if t.kind in ("int32", "int64"):
            return 0
        if t.kind == "bool":
            return False
        if t.kind == "intstr":
            return 0
        if t.kind == "struct":
            return self.struct(t, {}, "", "")
        return None

    def value(self, t, v, owner, path, ipath):
        if v is None:
            return self.zero(t) if t.kind != "ptr" else None
        k = t.kind
        if k == "ptr":
            return self.value(t.elem, v, owner, path, ipath)
        if k == "str":
            if not isinstance(v, str):
                self.fail(v, t, owner, path)
            return v
        if k in ("int32", "int64"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.fail(v, t, owner, path)
            lim = 2 ** 31 if k == "int32" else 2 ** 63
            if isinstance(v, float) or not -lim <= v < lim:
                self.fail(v, t, owner, path, number_literal=True)
            return v
        if k == "bool":
            if not isinstance(v, bool):
                self.fail(v, t, owner, path)
            return v
        if k in ("time", "mtime"):
            if not isinstance(v, str):
                self.fail(v, t, owner, path)
            try:
                dt = _parse_time(v)
            except ValueError as e:
                raise DecodeError(str(e)) from None
            ts = dt.timestamp()
            return _now_rfc3339(ts) if k == "time" else _now_micro(ts)
        if k == "intstr":
            if isinstance(v, str):
                return v
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise DecodeError("json: cannot unmarshal %s into Go value of type int32"
                                  % _jtype(v))
            if isinstance(v, float) or not -2 ** 31 <= v < 2 ** 31:
                raise DecodeError("json: cannot unmarshal number %s into Go value of type "
                                  "int32" % json.dumps(v))
            return v
        if k == "bytes":
            if not isinstance(v, str):
                self.fail(v, t, owner, path)
            try:
                base64.b64decode(v.encode(), validate=True)
            except Exception:
                raise DecodeError("illegal base64 data at input byte 0") from None
            return v
        if k == "raw":
            return v
        if k == "map":
            if not isinstance(v, dict):
                self.fail(v, t, owner, path)
            out = {}
            for key, x in v.items():
                out[key] = self.value(t.elem, x, owner, path, ipath + "[" + key + "]")
            return out
        if k == "list":
            if not isinstance(v, list):
                self.fail(v, t, owner, path)
            return [self.value(t.elem, x, owner, path, "%s[%d]" % (ipath, i))
                    for i, x in enumerate(v)]
        if k == "struct":
            if not isinstance(v, dict):
                self.fail(v, t, owner, path)
            return self.struct(t, v, path, ipath)
        raise AssertionError(k)

    def struct(self, t, v, path, ipath):
        out = {}
        known = set()
        for name, ft, omit in t.fields:
            known.add(name)
            fpath = (path + "." if path else "") + name
            fipath = (ipath + "." if ipath else "") + name
            if name in v:
                val = self.value(ft, v[name], t.goname, fpath, fipath)
            else:
                val = None if ft.kind == "ptr" else self.zero(ft)
            if ft.kind == "ptr":
                if val is None:
                    continue
            elif ft.kind in ("struct", "time", "mtime", "intstr"):
                pass      # structs are never omitted; a zero Time encodes as null
            elif omit and val in ("", 0, False, None) and not isinstance(val, (list, dict)):
                continue
            elif omit and isinstance(val, (list, dict)) and not val:
                continue
            out[name] = val
        for name in v:
            if name not in known:
                self.unknown.append((ipath + "." if ipath else "") + name)
        return out


def canonical(schema, kind, obj, decoder=None):
    """(kind, apiVersion) first, then the Go-encoded fields. Raises DecodeError."""
    d = decoder or _Decoder()
    body = d.struct(schema, {k: v for k, v in obj.items()
                             if k not in ("kind", "apiVersion")}, "", "")
    out = {"kind": kind, "apiVersion": "v1"}
    out.update(body)
    return out


# --------------------------------------------------------------------------------------
# name, label and address validation (k8s.io/apimachinery/pkg/util/validation)

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")

MSG_DNS1123_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                     "characters or '-', and must start and end with an alphanumeric "
                     "character (e.g. 'my-name',  or '123-abc', regex used for validation "
                     "is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
MSG_DNS1123_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case "
                         "alphanumeric characters, '-' or '.', and must start and end with "
                         "an alphanumeric character (e.g. 'example.com', regex used for "
                         "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]"
                         "([-a-z0-9]*[a-z0-9])?)*')")
MSG_DNS1035_LABEL = ("a DNS-1035 label must consist of lower case alphanumeric characters "
                     "or '-', start with an alphabetic character, and end with an "
                     "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
                     "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
MSG_QUALIFIED_NAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', "
                      "and must start and end with an alphanumeric character (e.g. 'MyName',"
                      "  or 'my.name',  or '123-abc', regex used for validation is "
                      "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
MSG_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric "
                   "characters, '-', '_' or '.', and must start and end with an alphanumeric"
                   " character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
                   "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
MSG_CONFIG_KEY = ("a valid config key must consist of alphanumeric characters, '-', '_' or "
                  "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                  "validation is '[-._a-zA-Z0-9]+')")


def is_dns1123_label(v):
    out = []
    if len(v) > 63:
        out.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(v):
        out.append(MSG_DNS1123_LABEL)
    return out


def is_dns1123_subdomain(v):
    out = []
    if len(v) > 253:
        out.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(v):
        out.append(MSG_DNS1123_SUBDOMAIN)
    return out


def is_dns1035_label(v):
    out = []
    if len(v) > 63:
        out.append("must be no more than 63 characters")
    if not _DNS1035_LABEL.match(v):
        out.append(MSG_DNS1035_LABEL)
    return out


def is_qualified_name(v):
    out = []
    parts = v.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            out.append("prefix part must be non-empty")
        else:
            out.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return ["a qualified name " + MSG_QUALIFIED_NAME[len("name part "):] +
                " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        out.append("name part must be non-empty")
    elif len(name) > 63:
        out.append("name part must be no more than 63 characters")
    if name and not _QUALIFIED_NAME.match(name):
        out.append(MSG_QUALIFIED_NAME)
    return out


def is_label_value(v):
    out = []
    if len(v) > 63:
        out.append("must be no more than 63 characters")
    if not _LABEL_VALUE.match(v):
        out.append(MSG_LABEL_VALUE)
    return out


def parse_ip(s):
    """net.ParseIP-like: dotted quad or IPv6 text; no zones, no leading-zero octets."""
    if not isinstance(s, str) or "%" in s or not s:
        return None
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def is_valid_ip(s):
    return [] if parse_ip(s) else ["must be a valid IP address, (e.g. 10.9.8.7 or "
                                   "2001:db8::ffff)"]


def validate_path_segment_name(name, prefix=False):
    out = []
    if not prefix and name in (".", ".."):
        out.append("may not be '%s'" % name)
    for bad in ("/", "%"):
        if bad in name:
            out.append("may not contain '%s'" % bad)
    return out


def validate_object_meta(meta, name_fn, errs, require_name=True):
    """ValidateObjectMeta / ValidateObjectMetaAccessor (namespaced objects)."""
    name = meta.get("name", "")
    gen = meta.get("generateName", "")
    if gen:
        for m in name_fn(gen, True):
            errs.append(Invalid("metadata.generateName", gen, m))
    if not name:
        if require_name:
            errs.append(Required("metadata.name", "name or generateName is required"))
    else:
        for m in name_fn(name, False):
            errs.append(Invalid("metadata.name", name, m))
    ns = meta.get("namespace", "")
    if not ns:
        errs.append(Required("metadata.namespace", ""))
    else:
        for m in is_dns1123_label(ns):
            errs.append(Invalid("metadata.namespace", ns, m))
    if meta.get("generation", 0) < 0:
        errs.append(Invalid("metadata.generation", meta["generation"],
                            "must be greater than or equal to 0"))
    for k, v in (meta.get("labels") or {}).items():
        for m in is_qualified_name(k):
            errs.append(Invalid("metadata.labels", k, m))
        for m in is_label_value(v):
            errs.append(Invalid("metadata.labels", v, m))
    total = 0
    for k, v in (meta.get("annotations") or {}).items():
        for m in is_qualified_name(k.lower()):
            errs.append(Invalid("metadata.annotations", k, m))
        total += len(k.encode()) + len(v.encode())
    if total > TOTAL_ANNOTATION_SIZE:
        errs.append(TooLong("metadata.annotations", TOTAL_ANNOTATION_SIZE))
    for i, f in enumerate(meta.get("finalizers") or []):
        for m in is_qualified_name(f):
            errs.append(Invalid("metadata.finalizers[%d]" % i, f, m))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        p = "metadata.ownerReferences[%d]" % i
        for fld in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(fld):
                errs.append(Invalid(p + "." + fld, ref.get(fld, ""),
                                    "%s must not be empty" % fld))


def dns1035_name(name, prefix):
    if prefix:
        name = name + "a" if name.endswith("-") else name
    return is_dns1035_label(name)


def dns1123_subdomain_name(name, prefix):
    if prefix:
        name = name + "a" if name.endswith(("-", ".")) else name
    return is_dns1123_subdomain(name)


def validate_object_meta_update(new, old, errs):
    """ValidateObjectMetaUpdate: immutable identity fields and no new finalizers once
    deletion has started."""
    nm, om = new["metadata"], old["metadata"]
    for f in ("name", "namespace", "uid"):
        if nm.get(f, "") != om.get(f, ""):
            errs.append(Invalid("metadata." + f, nm.get(f, ""), "field is immutable"))
    if om.get("deletionTimestamp"):
        extra = sorted(set(nm.get("finalizers") or []) - set(om.get("finalizers") or []))
        if extra:
            errs.append(Forbidden("metadata.finalizers",
                                  "no new finalizers can be added if the object is being "
                                  "deleted, found new finalizers []string{%s}"
                                  % ", ".join(_go_quote(x) for x in extra)))


# --------------------------------------------------------------------------------------
# label and field selectors (k8s.io/apimachinery/pkg/labels, pkg/fields)

class SelectorError(Exception):
    pass


_LS_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|<|>|[^\s=!(),<>]+)")


class LabelSelector:
    def __init__(self, text):
        self.reqs = self._parse(text or "")

    @staticmethod
    def _parse(text):
        toks = []
        pos = 0
        while pos < len(text):
            m = _LS_TOKEN.match(text, pos)
            if not m:
                break
            toks.append(m.group(1))
            pos = m.end()
        if text[pos:].strip():
            raise SelectorError("unable to parse requirement: found '%s', expected: "
                                "identifier" % text[pos:].strip())
        reqs = []
        i = 0

        def tok(j):
            return toks[j] if j < len(toks) else None

        while i < len(toks):
            neg = False
            if toks[i] == "!":
                neg = True
                i += 1
            key = tok(i)
            if key is None or key in ("==", "!=", "=", "(", ")", ",", "!", "<", ">"):
                raise SelectorError("unable to parse requirement: found '%s', expected: "
                                    "identifier" % (key or ""))
            errs = is_qualified_name(key)
            if errs:
                raise SelectorError('unable to parse requirement: <nil>: Invalid value: '
                                    '%s: %s' % (_go_quote(key), errs[0]))
            i += 1
            op = tok(i)
            if neg:
                if op not in (None, ","):
                    raise SelectorError("unable to parse requirement: found '%s', expected:"
                                        " ','" % op)
                reqs.append((key, "!", None))
            elif op in (None, ","):
                reqs.append((key, "exists", None))
            elif op in ("=", "==", "!="):
                i += 1
                val = tok(i)
                if val in (None, ","):
                    val = ""
                else:
                    if val in ("==", "!=", "=", "(", ")", "!", "<", ">"):
                        raise SelectorError("unable to parse requirement: found '%s', "
                                            "expected: identifier" % val)
                    i += 1
                verrs = is_label_value(val)
                if verrs:
                    raise SelectorError('unable to parse requirement: values[0][%s]: '
                                        'Invalid value: %s: %s' % (key, _go_quote(val),
                                                                   verrs[0]))
                reqs.append((key, "!=" if op == "!=" else "=", val))
            elif op in ("in", "notin"):
                i += 1
                if tok(i) != "(":
                    raise SelectorError("unable to parse requirement: found '%s', expected:"
                                        " '('" % (tok(i) or ""))
                i += 1
                vals = []
                while True:
                    t = tok(i)
                    if t is None:
                        raise SelectorError("unable to parse requirement: found '', "
                                            "expected: ')'")
                    if t == ")":
                        i += 1
                        break
                    if t == ",":
                        i += 1
                        continue
                    vals.append(t)
                    i += 1
                if op == "in" and not vals:
                    raise SelectorError("unable to parse requirement: for 'in', 'notin' "
                                        "operators, values set can't be empty")
                reqs.append((key, op, set(vals)))
            elif op in ("<", ">"):
                i += 1
                val = tok(i)
                try:
                    num = int(val)
                except (TypeError, ValueError):
                    raise SelectorError("unable to parse requirement: for 'Gt', 'Lt' "
                                        "operators, the value must be an integer") from None
                i += 1
                reqs.append((key, op, num))
            else:
                raise SelectorError("unable to parse requirement: found '%s', expected: "
                                    "'=', '!=', '==', 'in', notin'" % op)
            t = tok(i)
            if t is not None:
                if t != ",":
                    raise SelectorError("found '%s', expected: ',' or 'end of string'" % t)
                i += 1
        return reqs

    def empty(self):
        return not self.reqs

    def matches(self, labels):
        if not isinstance(labels, dict):
            labels = {}
        for key, op, val in self.reqs:
            has = key in labels
            cur = labels.get(key)
            if op == "exists" and not has:
                return False
            if op == "!" and has:
                return False
            if op == "=" and (not has or cur != val):
                return False
            if op == "!=" and has and cur == val:
                return False
            if op == "in" and (not has or cur not in val):
                return False
            if op == "notin" and has and cur in val:
                return False
            if op in ("<", ">"):
                try:
                    n = int(cur)
                except (TypeError, ValueError):
                    return False
                if not has or (op == ">" and not n > val) or (op == "<" and not n < val):
                    return False
        return True


def _split_unescaped(s, sep):
    out, cur, esc = [], [], False
    for ch in s:
        if esc:
            cur.append("\\" + ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if esc:
        cur.append("\\")
    out.append("".join(cur))
    return out


def _unescape_field_value(v):
    out, esc = [], False
    for ch in v:
        if esc:
            if ch not in "\\,=":
                raise SelectorError("invalid field selector: invalid escape sequence: \\%s"
                                    % ch)
            out.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch in ",=":
            raise SelectorError("invalid field selector: unescaped %s in value" % ch)
        else:
            out.append(ch)
    if esc:
        raise SelectorError("invalid field selector: unterminated escape sequence")
    return "".join(out)


class FieldSelector:
    def __init__(self, text, allowed):
        self.reqs = []
        if not text:
            return
        for term in _split_unescaped(text, ","):
            if not term:
                continue
            for op in ("!=", "==", "="):
                idx = self._find_op(term, op)
                if idx >= 0:
                    field, value = term[:idx], term[idx + len(op):]
                    break
            else:
                raise SelectorError("invalid selector: '%s'; can't understand '%s'"
                                    % (text, term))
            if field not in allowed:
                raise SelectorError("field label not supported: %s" % field)
            self.reqs.append((field, "!=" if op == "!=" else "=",
                              _unescape_field_value(value)))

    @staticmethod
    def _find_op(term, op):
        i = 0
        while i < len(term):
            if term[i] == "\\":
                i += 2
                continue
            if term.startswith(op, i):
                if op == "=" and (i > 0 and term[i - 1] == "!"):
                    i += 1
                    continue
                return i
            i += 1
        return -1

    def empty(self):
        return not self.reqs

    def exact_name(self):
        """RequiresExactMatch("metadata.name"): the name every match must have, or None."""
        for f, op, v in self.reqs:
            if f == "metadata.name" and op == "=":
                return v
        return None

    def matches(self, fields):
        for f, op, v in self.reqs:
            cur = fields.get(f, "")
            if op == "=" and cur != v:
                return False
            if op == "!=" and cur == v:
                return False
        return True

    def single(self, field):
        for f, op, v in self.reqs:
            if f == field and op == "=":
                return v
        return None


# --------------------------------------------------------------------------------------
# patches: RFC 7386 merge patch, RFC 6902 JSON patch, strategic merge patch

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class JsonPatchError(Exception):
    pass


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError("JSON pointer must start with '/': %s" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container, tok, allow_end, path):
    if allow_end and tok == "-":
        return len(container)
    if not re.match(r"^(0|[1-9][0-9]*)$", tok):
        raise JsonPatchError("Unable to access invalid index: %s" % tok)
    i = int(tok)
    if i > len(container) or (i == len(container) and not allow_end):
        raise JsonPatchError("Unable to access invalid index: %d" % i)
    return i


def _parent(doc, toks, opname, path):
    cur = doc
    for t in toks[:-1]:
        if isinstance(cur, dict) and t in cur:
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[_index(cur, t, False, path)]
            except JsonPatchError:
                cur = None
        else:
            cur = None
        if cur is None or not isinstance(cur, (dict, list)):
            raise JsonPatchError('%s operation does not apply: doc is missing path: "%s": '
                                 'missing value' % (opname, path))
    return cur


def _get(doc, path, opname):
    toks = _pointer(path)
    if not toks:
        return doc
    par = _parent(doc, toks, opname, path)
    t = toks[-1]
    if isinstance(par, dict):
        if t not in par:
            raise JsonPatchError('%s operation does not apply: doc is missing key: %s: '
                                 'missing value' % (opname, path))
        return par[t]
    return par[_index(par, t, False, path)]


def json_patch(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        path = op.get("path")
        if not isinstance(path, str):
            raise JsonPatchError("operation missing path")
        toks = _pointer(path)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise JsonPatchError("missing value")
        if kind == "add":
            if not toks:
                doc = copy.deepcopy(op["value"])
                continue
            par = _parent(doc, toks, "add", path)
            if isinstance(par, dict):
                par[toks[-1]] = copy.deepcopy(op["value"])
            else:
                par.insert(_index(par, toks[-1], True, path), copy.deepcopy(op["value"]))
        elif kind == "remove":
            if not toks:
                raise JsonPatchError("remove operation does not apply: doc is missing path")
            par = _parent(doc, toks, "remove", path)
            if isinstance(par, dict):
                if toks[-1] not in par:
                    raise JsonPatchError("error in remove for path: '%s': Unable to remove "
                                         "nonexistent key: %s: missing value"
                                         % (path, toks[-1]))
                del par[toks[-1]]
            else:
                del par[_index(par, toks[-1], False, path)]
        elif kind == "replace":
            if not toks:
                doc = copy.deepcopy(op["value"])
                continue
            par = _parent(doc, toks, "replace", path)
            if isinstance(par, dict):
                if toks[-1] not in par:
                    raise JsonPatchError("replace operation does not apply: doc is missing "
                                         "key: %s: missing value" % path)
                par[toks[-1]] = copy.deepcopy(op["value"])
            else:
                par[_index(par, toks[-1], False, path)] = copy.deepcopy(op["value"])
        elif kind == "test":
            try:
                cur = _get(doc, path, "test")
            except JsonPatchError:
                cur = None
                if op["value"] is None:
                    continue
                raise JsonPatchError("testing value %s failed: test failed" % path) from None
            if not _strict_equal(cur, op["value"]):
                raise JsonPatchError("testing value %s failed: test failed" % path)
        elif kind in ("move", "copy"):
            frm = op.get("from")
            if not isinstance(frm, str):
                raise JsonPatchError("%s operation missing from" % kind)
            val = copy.deepcopy(_get(doc, frm, kind))
            if kind == "move":
                ftoks = _pointer(frm)
                fpar = _parent(doc, ftoks, "move", frm)
                if isinstance(fpar, dict):
                    del fpar[ftoks[-1]]
                else:
                    del fpar[_index(fpar, ftoks[-1], False, frm)]
            doc = json_patch(doc, [{"op": "add", "path": path, "value": val}])
        else:
            raise JsonPatchError("Unexpected kind: %s" % kind)
    return doc


# strategic merge patch: list merge strategies of the fields these types have
# (patchStrategy/patchMergeKey struct tags in k8s.io/api/core/v1 and meta/v1)
SMP_LISTS = {
    ("metadata", "finalizers"): None,            # merge, primitive list (set union)
    ("metadata", "ownerReferences"): "uid",
    ("spec", "ports"): "port",
    ("status", "conditions"): "type",
}


class SmpError(Exception):
    pass


def _smp_list(target, patch, key, path):
    if not isinstance(patch, list):
        raise SmpError("%s: expected a list" % ".".join(path))
    target = list(target) if isinstance(target, list) else []
    if key is None:      # primitive list with merge strategy
        for v in patch:
            if isinstance(v, dict):
                raise SmpError("%s: unexpected map in a list of primitives" % ".".join(path))
            if not any(_strict_equal(v, t) for t in target):
                target.append(v)
        return target
    for item in patch:
        if isinstance(item, dict) and item.get("$patch") == "replace":
            return [dict((k, v) for k, v in x.items() if k != "$patch")
                    for x in patch if x is not item]
    for item in patch:
        if not isinstance(item, dict):
            raise SmpError("%s: expected a map in a list with merge key" % ".".join(path))
        if key not in item:
            raise SmpError("map: %s does not contain declared merge key: %s"
                           % (json_dumps(item), key))
        idx = next((i for i, t in enumerate(target)
                    if isinstance(t, dict) and _strict_equal(t.get(key), item[key])), None)
        if item.get("$patch") == "delete":
            target = [t for t in target if not (isinstance(t, dict)
                                                and _strict_equal(t.get(key), item[key]))]
            continue
        if idx is None:
            target.append(_smp_map({}, item, path))
        else:
            target[idx] = _smp_map(target[idx], item, path)
    return target


def _smp_map(target, patch, path):
    if not isinstance(patch, dict):
        raise SmpError("%s: expected a map" % ".".join(path))
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in patch.items() if k != "$patch" and v is not None}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise SmpError("Unknown patch type: %s in map: %s" % (directive, json_dumps(patch)))
    out = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            fld = k.split("/", 1)[1]
            if isinstance(out.get(fld), list) and isinstance(v, list):
                out[fld] = [x for x in out[fld] if not any(_strict_equal(x, y) for y in v)]
            continue
        if v is None:
            out.pop(k, None)
            continue
        sub = path + (k,)
        if isinstance(v, dict):
            r = _smp_map(out.get(k), v, sub)
            if r is None:
                out.pop(k, None)
            else:
                out[k] = r
        elif isinstance(v, list) and sub[-2:] in SMP_LISTS and len(sub) == 2:
            out[k] = _smp_list(out.get(k), v, SMP_LISTS[sub[-2:]], sub)
        else:
            out[k] = copy.deepcopy(v)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") and isinstance(out.get(k.split("/", 1)[1]), list):
            fld = k.split("/", 1)[1]
            key = SMP_LISTS.get(path + (fld,)) if len(path) == 1 else None
            order = v if isinstance(v, list) else []

            def pos(x, order=order, key=key):
                probe = x.get(key) if key and isinstance(x, dict) else x
                for i, o in enumerate(order):
                    o = o.get(key) if key and isinstance(o, dict) else o
                    if _strict_equal(o, probe):
                        return i
                return len(order)
            out[fld] = sorted(out[fld], key=pos)
    return out


def strategic_merge_patch(target, patch):
    r = _smp_map(target, patch, ())
    return r if r is not None else {}


# --------------------------------------------------------------------------------------
# resource kinds

class _GoRepr:
    """A bad value shown verbatim in a field error (Go's %#v of a slice, say)."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


class _Kind:
    def __init__(self, resource, kind, schema, name_fn, return_deleted, create_on_update,
                 has_status, extra_fields=()):
        self.resource, self.kind, self.schema = resource, kind, schema
        self.list_kind = kind + "List"
        self.singular = kind.lower()
        self.name_fn = name_fn
        self.return_deleted = return_deleted
        self.create_on_update = create_on_update
        self.has_status = has_status
        self.field_labels = {"metadata.name", "metadata.namespace"} | set(extra_fields)

    def fields(self, obj):
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        out = {"metadata.name": _s(meta.get("name")),
               "metadata.namespace": _s(meta.get("namespace"))}
        if self.resource == "events":
            inv = obj.get("involvedObject") if isinstance(obj.get("involvedObject"), dict) else {}
            for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                      "fieldPath"):
                out["involvedObject." + f] = _s(inv.get(f))
            src = obj.get("source") if isinstance(obj.get("source"), dict) else {}
            out["reason"] = _s(obj.get("reason"))
            out["reportingComponent"] = _s(obj.get("reportingComponent"))
            out["source"] = _s(src.get("component"))
            out["type"] = _s(obj.get("type"))
        return out


def _s(v):
    return v if isinstance(v, str) else ""


def _meta(obj):
    m = obj.get("metadata") if isinstance(obj, dict) else None
    return m if isinstance(m, dict) else {}


KINDS = {
    "services": _Kind("services", "Service", SERVICE, dns1035_name, True, True, True),
    "configmaps": _Kind("configmaps", "ConfigMap", CONFIGMAP, dns1123_subdomain_name,
                        False, False, False),
    "events": _Kind("events", "Event", EVENT, validate_path_segment_name, False, True, False,
                    ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                     "involvedObject.uid", "involvedObject.apiVersion",
                     "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                     "reportingComponent", "source", "type")),
}
_KIND_ALIASES = {}
for _k in KINDS.values():
    for _alias in (_k.resource, _k.kind, _k.kind.lower(), _k.singular):
        _KIND_ALIASES[_alias] = _k
_KIND_ALIASES["svc"] = KINDS["services"]
_KIND_ALIASES["cm"] = KINDS["configmaps"]


def _kind(name):
    try:
        return _KIND_ALIASES[name]
    except KeyError:
        raise ValueError("unknown resource %r (services, configmaps, events)" % name) from None


SVC_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]


def _needs_cluster_ip(spec):
    return spec.get("type") != "ExternalName"


def _needs_node_port(spec):
    return spec.get("type") in ("NodePort", "LoadBalancer")


def _needs_hc_node_port(spec):
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _service_defaults(obj):
    """SetDefaults_Service (decode-time defaulting of core/v1 Services)."""
    spec = obj["spec"]
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "ClientIP":
        cfg = spec.get("sessionAffinityConfig") or {}
        cip = cfg.get("clientIP") or {}
        if cip.get("timeoutSeconds") is None:
            cip["timeoutSeconds"] = 10800
        cfg["clientIP"] = cip
        spec["sessionAffinityConfig"] = cfg
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    for p in spec.get("ports") or []:
        if not p.get("protocol"):
            p["protocol"] = "TCP"
        if p.get("targetPort") in (0, ""):
            p["targetPort"] = p.get("port", 0)
    t = spec["type"]
    if t in ("NodePort", "LoadBalancer") and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if t != "ExternalName" and spec.get("internalTrafficPolicy") is None:
        spec["internalTrafficPolicy"] = "Cluster"
    if t == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    # LoadBalancerIPMode (beta and on by default from 1.30, GA in 1.32): an ingress
    # entry with an ip gets ipMode VIP.
    if t == "LoadBalancer":
        for ing in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if isinstance(ing, dict) and ing.get("ip") and ing.get("ipMode") is None:
                ing["ipMode"] = "VIP"


def _drop_type_dependent_fields(new, old):
    """svcStrategy dropTypeDependentFields (update only)."""
    ns, os_ = new["spec"], old["spec"]
    if _needs_cluster_ip(os_) and not _needs_cluster_ip(ns):
        if ns.get("clusterIP", "") == os_.get("clusterIP", "") and \
                ns.get("clusterIPs", []) == os_.get("clusterIPs", []):
            ns.pop("clusterIP", None)
            ns.pop("clusterIPs", None)
        if ns.get("ipFamilies") == os_.get("ipFamilies"):
            ns.pop("ipFamilies", None)
        if ns.get("ipFamilyPolicy") == os_.get("ipFamilyPolicy"):
            ns.pop("ipFamilyPolicy", None)
    if _needs_node_port(os_) and not _needs_node_port(ns):
        oldp = {p.get("nodePort", 0) for p in os_.get("ports") or []} - {0}
        newp = {p.get("nodePort", 0) for p in ns.get("ports") or []} - {0}
        if newp <= oldp:
            for p in ns.get("ports") or []:
                p.pop("nodePort", None)
    if _needs_hc_node_port(os_) and not _needs_hc_node_port(ns) and \
            ns.get("healthCheckNodePort", 0) == os_.get("healthCheckNodePort", 0):
        ns.pop("healthCheckNodePort", None)
    if os_.get("type") == "LoadBalancer" and ns.get("type") != "LoadBalancer":
        if ns.get("allocateLoadBalancerNodePorts") is not None and \
                os_.get("allocateLoadBalancerNodePorts") == ns.get("allocateLoadBalancerNodePorts"):
            ns.pop("allocateLoadBalancerNodePorts", None)
        if ns.get("loadBalancerClass") == os_.get("loadBalancerClass"):
            ns.pop("loadBalancerClass", None)
    if _needs_node_port(os_) and not _needs_node_port(ns) and \
            ns.get("externalTrafficPolicy", "") == os_.get("externalTrafficPolicy", ""):
        ns.pop("externalTrafficPolicy", None)
    if ns.get("type") != "LoadBalancer":
        new["status"]["loadBalancer"] = {}


def _iana_svc_name(v):
    out = []
    if len(v) > 15:
        out.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME.match(v):
        out.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in v:
        out.append("must not contain consecutive hyphens")
    if not re.search("[a-z]", v):
        out.append("must contain at least one letter (a-z)")
    if v.startswith("-") or v.endswith("-"):
        out.append("must not begin or end with a hyphen")
    return out


def _validate_service(obj, old, errs):
    spec = obj["spec"]
    t = spec.get("type", "")
    headless = spec.get("clusterIP") == "None"
    ports = spec.get("ports") or []
    if not ports and not headless and t != "ExternalName":
        errs.append(Required("spec.ports"))
    if t in ("LoadBalancer", "NodePort") and headless:
        errs.append(Invalid("spec.clusterIPs[0]", "None",
                            "may not be set to 'None' for %s services" % t))
    if t == "ExternalName":
        if spec.get("clusterIP"):
            errs.append(Forbidden("spec.clusterIPs", "may not be set for ExternalName "
                                                     "services"))
        en = spec.get("externalName", "")
        if not en:
            errs.append(Required("spec.externalName"))
        else:
            for m in is_dns1123_subdomain(en[:-1] if en.endswith(".") else en):
                errs.append(Invalid("spec.externalName", en, m))
    names = set()
    seen = set()
    for i, p in enumerate(ports):
        pp = "spec.ports[%d]" % i
        name = p.get("name", "")
        if len(ports) > 1 and not name:
            errs.append(Required(pp + ".name"))
        elif name:
            for m in is_dns1123_label(name):
                errs.append(Invalid(pp + ".name", name, m))
            if name in names:
                errs.append(Duplicate(pp + ".name", name))
            names.add(name)
        port = p.get("port", 0)
        if not 1 <= port <= 65535:
            errs.append(Invalid(pp + ".port", port, "must be between 1 and 65535, inclusive"))
        proto = p.get("protocol", "")
        if proto not in ("SCTP", "TCP", "UDP"):
            errs.append(NotSupported(pp + ".protocol", proto, ["SCTP", "TCP", "UDP"]))
        tp = p.get("targetPort", 0)
        if isinstance(tp, int) and not 1 <= tp <= 65535:
            errs.append(Invalid(pp + ".targetPort", tp, "must be between 1 and 65535, "
                                                        "inclusive"))
        elif isinstance(tp, str):
            for m in _iana_svc_name(tp):
                errs.append(Invalid(pp + ".targetPort", tp, m))
        if t == "ClusterIP" and p.get("nodePort"):
            errs.append(Forbidden(pp + ".nodePort", "may not be used when `type` is "
                                                    "'ClusterIP'"))
        np = p.get("nodePort", 0)
        if np and not 1 <= np <= 65535:
            errs.append(Invalid(pp + ".nodePort", np, "must be between 1 and 65535, "
                                                      "inclusive"))
        if (proto, port) in seen:
            errs.append(Duplicate(pp, _GoRepr('core.ServicePort{Protocol:%s, Port:%d}'
                                              % (_go_quote(proto), port))))
        seen.add((proto, port))
    sa = spec.get("sessionAffinity", "")
    if sa not in ("ClientIP", "None"):
        errs.append(NotSupported("spec.sessionAffinity", sa, ["ClientIP", "None"]))
    if not t:
        errs.append(Required("spec.type"))
    elif t not in SVC_TYPES:
        errs.append(NotSupported("spec.type", t, SVC_TYPES))
    for i, ip in enumerate(spec.get("clusterIPs") or []):
        if ip != "None" and not parse_ip(ip):
            errs.append(Invalid("spec.clusterIPs[%d]" % i, ip, is_valid_ip(ip)[0]))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        for m in is_valid_ip(ip):
            errs.append(Invalid("spec.externalIPs[%d]" % i, ip, m))
    lsr = spec.get("loadBalancerSourceRanges") or []
    if lsr and t != "LoadBalancer":
        errs.append(Forbidden("spec.loadBalancerSourceRanges",
                              "may only be used when `type` is 'LoadBalancer'"))
    for i, c in enumerate(lsr):
        try:
            ipaddress.ip_network(c.strip(), strict=False)
        except ValueError:
            errs.append(Invalid("spec.loadBalancerSourceRanges[%d]" % i, c,
                                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or "
                                "2001:db8::/64)"))
    lbc = spec.get("loadBalancerClass")
    if lbc is not None:
        if t != "LoadBalancer":
            errs.append(Forbidden("spec.loadBalancerClass",
                                  "may only be used when `type` is 'LoadBalancer'"))
        else:
            for m in is_qualified_name(lbc):
                errs.append(Invalid("spec.loadBalancerClass", lbc, m))
    if old is not None and old["spec"].get("type") == "LoadBalancer" and t == "LoadBalancer" \
            and old["spec"].get("loadBalancerClass") != lbc:
        errs.append(Invalid("spec.loadBalancerClass", lbc, "may not change once set"))
    etp = spec.get("externalTrafficPolicy", "")
    if etp:
        if etp not in ("Cluster", "Local"):
            errs.append(NotSupported("spec.externalTrafficPolicy", etp, ["Cluster", "Local"]))
        elif t not in ("NodePort", "LoadBalancer"):
            errs.append(Invalid("spec.externalTrafficPolicy", etp,
                                "may only be set for externally-accessible services"))
    itp = spec.get("internalTrafficPolicy")
    if itp is not None and itp not in ("Cluster", "Local"):
        errs.append(NotSupported("spec.internalTrafficPolicy", itp, ["Cluster", "Local"]))
    pol = spec.get("ipFamilyPolicy")
    if pol is not None and pol not in ("PreferDualStack", "RequireDualStack", "SingleStack"):
        errs.append(NotSupported("spec.ipFamilyPolicy", pol,
                                 ["PreferDualStack", "RequireDualStack", "SingleStack"]))
    fams = spec.get("ipFamilies") or []
    for i, f in enumerate(fams):
        if f not in ("IPv4", "IPv6"):
            errs.append(NotSupported("spec.ipFamilies[%d]" % i, f, ["IPv4", "IPv6"]))
        elif f in fams[:i]:
            errs.append(Duplicate("spec.ipFamilies[%d]" % i, f))
    if old is not None and _needs_cluster_ip(old["spec"]) and _needs_cluster_ip(spec):
        oip = old["spec"].get("clusterIP", "")
        if oip and spec.get("clusterIP", "") != oip:
            errs.append(Invalid("spec.clusterIPs[0]", spec.get("clusterIP", ""),
                                "may not change once set"))


def _validate_configmap(obj, old, errs):
    total = 0
    data = obj.get("data") or {}
    for k, v in data.items():
        _validate_config_key("data[%s]" % k, k, errs)
        total += len(v.encode())
    for k, v in (obj.get("binaryData") or {}).items():
        _validate_config_key("binaryData[%s]" % k, k, errs)
        if k in data:
            errs.append(Invalid("binaryData[%s]" % k, k, "duplicate of key present in data"))
        total += len(base64.b64decode(v))
    if total > CONFIGMAP_MAX_SIZE:
        errs.append(TooLong("", CONFIGMAP_MAX_SIZE))
    if old is not None and old.get("immutable") is True:
        if obj.get("immutable") is not True:
            errs.append(Forbidden("immutable", "field is immutable when `immutable` is set"))
        if obj.get("data") != old.get("data"):
            errs.append(Forbidden("data", "field is immutable when `immutable` is set"))
        if obj.get("binaryData") != old.get("binaryData"):
            errs.append(Forbidden("binaryData", "field is immutable when `immutable` is set"))


def _validate_config_key(path, k, errs):
    msgs = []
    if len(k) > 253:
        msgs.append("must be no more than 253 characters")
    if not _CONFIG_KEY.match(k):
        msgs.append(MSG_CONFIG_KEY)
    if k in (".", ".."):
        msgs.append("must not be '%s'" % k)
    elif k.startswith(".."):
        msgs.append("must not start with '..'")
    for m in msgs:
        errs.append(Invalid(path, k, m))


def _validate_event(obj, old, errs):
    """legacyValidateEvent: what core/v1 Events are checked for."""
    ns = obj["metadata"].get("namespace", "")
    inv = obj.get("involvedObject") or {}
    if not obj.get("eventTime"):
        if not inv.get("namespace"):
            if ns not in ("", "default"):
                errs.append(Invalid("involvedObject.namespace", inv.get("namespace", ""),
                                    "does not match event.namespace"))
        elif ns != inv.get("namespace"):
            errs.append(Invalid("involvedObject.namespace", inv.get("namespace", ""),
                                "does not match event.namespace"))
    else:
        if not inv.get("namespace") and ns not in ("default", "kube-system"):
            errs.append(Invalid("involvedObject.namespace", inv.get("namespace", ""),
                                "does not match event.namespace"))
        if not obj.get("reportingComponent"):
            errs.append(Required("reportingComponent"))
        for m in is_qualified_name(obj.get("reportingComponent", "")):
            errs.append(Invalid("reportingComponent", obj.get("reportingComponent", ""), m))
        if not obj.get("reportingInstance"):
            errs.append(Required("reportingInstance"))
        elif len(obj["reportingInstance"]) > 128:
            errs.append(Invalid("reportingInstance", "", "can have at most 128 characters"))
        if not obj.get("action"):
            errs.append(Required("action"))
        elif len(obj["action"]) > 128:
            errs.append(Invalid("action", "", "can have at most 128 characters"))
        if not obj.get("reason"):
            errs.append(Required("reason"))
        elif len(obj["reason"]) > 128:
            errs.append(Invalid("reason", "", "can have at most 128 characters"))
        if len(obj.get("message", "")) > 1024:
            errs.append(Invalid("message", "", "can have at most 1024 characters"))
    for m in is_dns1123_subdomain(ns):
        errs.append(Invalid("namespace", ns, m))


VALIDATORS = {"services": _validate_service, "configmaps": _validate_configmap,
              "events": _validate_event}


# --------------------------------------------------------------------------------------
# managedFields (an approximation of what the field manager records)

_SYSTEM_META = {"name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
                "generation", "creationTimestamp", "deletionTimestamp",
                "deletionGracePeriodSeconds", "managedFields"}


def _leaves(obj, prefix=()):
    out = {}
    for k, v in obj.items():
        if not prefix and k in ("kind", "apiVersion"):
            continue
        if prefix == ("metadata",) and k in _SYSTEM_META:
            continue
        p = prefix + (k,)
        if isinstance(v, dict) and v:
            out.update(_leaves(v, p))
        elif v is not None and v != {}:
            out[p] = v
    return out


def _fields_v1(paths):
    root = {}
    for p in sorted(paths):
        node = root
        for k in p:
            node = node.setdefault("f:" + k, {})
    return root


def _paths_of(fv1, prefix=()):
    out = set()
    if not isinstance(fv1, dict):
        return out
    for k, v in fv1.items():
        if not k.startswith("f:"):
            continue
        p = prefix + (k[2:],)
        if isinstance(v, dict) and any(x.startswith("f:") for x in v):
            out |= _paths_of(v, p)
        else:
            out.add(p)
    return out


def _update_managed_fields(new, old, manager, subresource, now):
    entries = [e for e in (_meta(old).get("managedFields") or []) if isinstance(e, dict)] \
        if old is not None else []
    skip = "spec" if subresource == "status" else "status"
    newl = {p: v for p, v in _leaves(new).items() if p[0] != skip}
    oldl = {p: v for p, v in (_leaves(old) if old is not None else {}).items()
            if p[0] != skip}
    changed = {p for p in newl if p not in oldl or not _strict_equal(newl[p], oldl[p])}
    removed = {p for p in oldl if p not in newl}
    out = []
    mine = set()
    for e in entries:
        paths = _paths_of(e.get("fieldsV1"))
        if e.get("manager") == manager and e.get("operation") == "Update" and \
                e.get("subresource", "") == (subresource or ""):
            mine = paths - removed
            continue
        paths = paths - changed - removed
        if paths:
            e = dict(e)
            e["fieldsV1"] = _fields_v1(paths)
            out.append(e)
    mine |= changed
    if mine:
        e = {"manager": manager, "operation": "Update", "apiVersion": "v1", "time": now,
             "fieldsType": "FieldsV1", "fieldsV1": _fields_v1(mine)}
        if subresource:
            e["subresource"] = subresource
        out.append(e)
    if out:
        new["metadata"]["managedFields"] = out
    else:
        new["metadata"].pop("managedFields", None)


def _without(obj, *meta_keys):
    o = dict(obj)
    m = dict(_meta(obj))
    for k in meta_keys:
        m.pop(k, None)
    o["metadata"] = m
    return o


# --------------------------------------------------------------------------------------
# the store: objects, a bounded change history, watchers

class _Change:
    __slots__ = ("rv", "res", "ns", "name", "type", "obj", "prev")

    def __init__(self, rv, res, ns, name, typ, obj, prev):
        self.rv, self.res, self.ns, self.name = rv, res, ns, name
        self.type, self.obj, self.prev = typ, obj, prev


_META_ORDER = [f[0] for f in OBJECT_META.fields]


def _with_rv(obj, rv):
    """A copy of obj with metadata.resourceVersion set (keeping ObjectMeta field order)."""
    o = dict(obj)
    if isinstance(obj.get("metadata"), dict):
        m = dict(obj["metadata"])
        m["resourceVersion"] = str(rv)
        known = [k for k in _META_ORDER if k in m]
        o["metadata"] = {k: m[k] for k in known + [k for k in m if k not in _META_ORDER]}
    return o


class _Dropped(Exception):
    pass


class _Watcher:
    def __init__(self, kd, ns, lsel, fsel, start_rv, qmax, path):
        self.kd, self.ns, self.lsel, self.fsel = kd, ns, lsel, fsel
        self.start_rv = start_rv
        self.qmax = qmax
        self.path = path
        self.cond = threading.Condition()
        self.items = collections.deque()
        self.closed = None          # None | "overflow" | "drop" | "stop"
        self.sock = None

    def matches(self, obj):
        if not self.lsel.empty() and not self.lsel.matches(_meta(obj).get("labels")):
            return False
        if not self.fsel.empty() and not self.fsel.matches(self.kd.fields(obj)):
            return False
        return True

    def translate(self, ch):
        """The event this watcher sees for a change (selector transitions as the cacher
        does: an object leaving the selection is a DELETED of its previous content)."""
        if ch.res != self.kd.resource or ch.rv <= self.start_rv:
            return None
        if self.ns is not None and ch.ns != self.ns:
            return None
        if ch.type == "DELETED":
            return ("DELETED", ch.obj) if self.matches(ch.prev) else None
        new_ok = self.matches(ch.obj)
        if ch.type == "ADDED":
            return ("ADDED", ch.obj) if new_ok else None
        old_ok = ch.prev is not None and self.matches(ch.prev)
        if new_ok and old_ok:
            return ("MODIFIED", ch.obj)
        if new_ok:
            return ("ADDED", ch.obj)
        if old_ok:
            return ("DELETED", _with_rv(ch.prev, ch.rv))
        return None

    def offer(self, item):
        with self.cond:
            if self.closed:
                return
            if len(self.items) >= self.qmax:
                self.closed = "overflow"
            else:
                self.items.append(item)
            self.cond.notify_all()

    def close(self, why):
        with self.cond:
            if not self.closed:
                self.closed = why
            self.cond.notify_all()


def _parse_bool(name, v):
    if v in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if v in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise err_bad_request('strconv.ParseBool: parsing %s: invalid syntax' % _go_quote(v))


def _parse_int(name, v):
    if not re.match(r"^[+-]?[0-9]+$", v or ""):
        raise err_bad_request('strconv.ParseInt: parsing %s: invalid syntax' % _go_quote(v))
    return int(v)


def _parse_rv(v):
    """'' -> None; otherwise the number (APIObjectVersioner.ParseResourceVersion)."""
    if v is None or v == "":
        return None
    if not re.match(r"^[0-9]+$", v):
        raise ApiError(400, "BadRequest", 'resourceVersion: Invalid value: %s: '
                                          'strconv.ParseUint: parsing %s: invalid syntax'
                       % (_go_quote(v), _go_quote(v)))
    return int(v)


def _encode_continue(start_key, rv):
    tok = {"v": "meta.k8s.io/v1", "rv": rv, "start": start_key}
    return base64.urlsafe_b64encode(json.dumps(tok, separators=(",", ":")).encode()) \
        .rstrip(b"=").decode()


def _decode_continue(token):
    try:
        pad = "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode((token + pad).encode())
        tok = json.loads(raw)
    except Exception as e:
        raise err_bad_request("invalid continue token: continue key is not valid: %s" % e) \
            from None
    if not isinstance(tok, dict) or tok.get("v") != "meta.k8s.io/v1":
        raise err_bad_request("invalid continue token: continue key is not valid: server "
                              "does not recognize this encoded version %s"
                              % _go_quote(str(tok.get("v") if isinstance(tok, dict) else "")))
    rv, start = tok.get("rv"), tok.get("start")
    if not isinstance(rv, int) or isinstance(rv, bool) or rv == 0:
        raise err_bad_request("invalid continue token: continue key is not valid: incorrect "
                              "encoded start resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(start, str) or not start:
        raise err_bad_request("invalid continue token: continue key is not valid: encoded "
                              "start key empty (version meta.k8s.io/v1)")
    return start, rv


class _Api:
    """Everything behind the HTTP surface; all state under one lock."""

    def __init__(self, opts):
        self.o = opts
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = opts["initial_resource_version"]
        # Two windows of past changes, as kube-apiserver has them: etcd's (lists at
        # an older resourceVersion, continue tokens), over all resources, and each
        # resource's watch cache (watches from a resourceVersion), so that churn in
        # one resource does not expire watches of another.
        self.floor = self.rv                # oldest resourceVersion a list can read
        self.history = collections.deque()  # _Change, oldest first
        self.watch_history = collections.defaultdict(collections.deque)  # res -> _Change
        self.watch_floor = collections.defaultdict(lambda: self.compacted_at)  # res -> rv
        self.compacted_at = self.rv
        self.objs = {}                      # (res, ns, name) -> stored object
        self.watchers = set()
        self.clock = opts["clock"]
        self.rng = random.Random(opts["seed"])
        self.stopping = threading.Event()
        self.hold = threading.Event()
        self.tokens = set([opts["token"]]) if opts["token"] is not None else None
        self.faults = []                    # fail_next rules
        self.watch_errors = []              # fail_next_watches rules
        self.delays = []
        self.holds = []  # the Events of hold_requests(), which stop() sets
        self.denials = []
        self.log = collections.deque(maxlen=opts["request_log_limit"])
        self.log_cond = threading.Condition()
        cidrs = [ipaddress.ip_network(c, strict=False) for c in opts["service_cidrs"]]
        self.cidrs = {("IPv4" if c.version == 4 else "IPv6"): c for c in cidrs}
        self.families = ["IPv4" if c.version == 4 else "IPv6" for c in cidrs]
        self.namespaces = set(opts["namespaces"]) if opts["namespaces"] is not None else None
        self.ns_uids = {}
        self.internal_errors = []
        self.http = _ApiHttp(self)

    def record(self, method, path, query, ctype):
        with self.log_cond:
            self.log.append(Request(method, path, query, ctype, time.monotonic()))
            self.log_cond.notify_all()

    # ---- small helpers -------------------------------------------------------------

    def now(self):
        return _now_rfc3339(self.clock())

    def _generate_name(self, base):
        base = base[:58]
        return base + "".join(self.rng.choice(NAME_CHARS) for _ in range(5))

    def _commit(self, kd, ns, name, typ, obj):
        """Write (or delete, obj=None) under the lock; returns the stored object."""
        key = (kd.resource, ns, name)
        self.rv += 1
        rv = self.rv
        prev = self.objs.get(key)
        if typ == "DELETED":
            del self.objs[key]
            stored = _with_rv(prev, rv)
        else:
            stored = _with_rv(obj, rv)
            self.objs[key] = stored
        ch = _Change(rv, kd.resource, ns, name, typ, stored, prev)
        self.history.append(ch)
        while len(self.history) > self.o["history_limit"]:
            self.floor = self.history.popleft().rv
        cache = self.watch_history[ch.res]
        cache.append(ch)
        while len(cache) > self.o["history_limit"]:
            self.watch_floor[ch.res] = cache.popleft().rv
        for w in list(self.watchers):
            ev = w.translate(ch)
            if ev is not None:
                w.offer(("event",) + ev)
        self.cond.notify_all()
        return stored

    def state_at(self, rv):
        """Objects as they were at resourceVersion rv (rv >= floor)."""
        objs = dict(self.objs)
        for ch in reversed(self.history):
            if ch.rv <= rv:
                break
            key = (ch.res, ch.ns, ch.name)
            if ch.prev is None:
                objs.pop(key, None)
            else:
                objs[key] = ch.prev
        return objs

    def compact(self):
        with self.lock:
            self.history.clear()
            self.floor = self.rv
            self.watch_history.clear()
            self.watch_floor.clear()
            self.compacted_at = self.rv

    # ---- decoding request bodies ----------------------------------------------------

    def decode_object(self, kd, raw, for_patch=False):
        """JSON value -> canonical typed object + unknown-field warnings."""
        if not isinstance(raw, dict):
            msg = "json: cannot unmarshal %s into Go value of type struct { APIVersion " \
                  "string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"" \
                  "kind,omitempty\\\"\" }" % _jtype(raw)
            if for_patch:
                raise err_invalid("", "", [Invalid("patch", json_dumps(raw), msg)])
            raise err_bad_request("the object provided is unrecognized (must be of type %s):"
                                  " couldn't get version/kind; json parse error: %s"
                                  % (kd.kind, msg))
        kind = raw.get("kind", "")
        ver = raw.get("apiVersion", "")
        if not isinstance(kind, str) or not isinstance(ver, str):
            msg = "json: cannot unmarshal %s into Go struct field .kind of type string" \
                % _jtype(kind if not isinstance(kind, str) else ver)
            if for_patch:
                raise err_invalid("", "", [Invalid("patch", json_dumps(raw), msg)])
            raise err_bad_request("the object provided is unrecognized (must be of type %s):"
                                  " couldn't get version/kind; json parse error: %s"
                                  % (kd.kind, msg))
        if (ver and ver != "v1") or (kind and kind != kd.kind):
            k = kind or kd.kind
            v = ver or "v1"
            if v != "v1":
                why = 'no kind "%s" is registered for version "%s" in scheme ' \
                      '"pkg/api/legacyscheme/scheme.go:30"' % (k, v)
            else:
                why = "converting (v1.%s) to (core.%s): unknown conversion" % (k, kd.kind)
            if for_patch:
                raise err_invalid("", "", [Invalid("patch", json_dumps(raw), why)])
            raise err_bad_request('%s in version "%s" cannot be handled as a %s: %s'
                                  % (k, v, kd.kind, why))
        d = _Decoder()
        try:
            obj = canonical(kd.schema, kd.kind, raw, d)
        except DecodeError as e:
            if for_patch:
                raise err_invalid("", "", [Invalid("patch", json_dumps(raw), str(e))]) \
                    from None
            raise err_bad_request('%s in version "v1" cannot be handled as a %s: %s'
                                  % (kd.kind, kd.kind, e)) from None
        warnings = ['unknown field "%s"' % p for p in d.unknown]
        return obj, warnings

    def recanon(self, kd, obj):
        return canonical(kd.schema, kd.kind, obj)

    # ---- services: allocation of cluster IPs and node ports ---------------------------

    def _svc_used(self, exclude):
        ips, ports = set(), set()
        for key, o in self.objs.items():
            if key[0] != "services" or key == exclude:
                continue
            spec = o.get("spec") if isinstance(o.get("spec"), dict) else {}
            cips = spec.get("clusterIPs")
            for ip in cips if isinstance(cips, list) else []:
                if isinstance(ip, str):
                    ips.add(ip)
            for p in spec.get("ports") if isinstance(spec.get("ports"), list) else []:
                if isinstance(p, dict) and isinstance(p.get("nodePort"), int):
                    ports.add(p["nodePort"])
            if isinstance(spec.get("healthCheckNodePort"), int):
                ports.add(spec["healthCheckNodePort"])
        return ips, ports

    def _alloc_ip(self, fam, used):
        net = self.cidrs[fam]
        first = int(net.network_address) + 10
        last = int(net.broadcast_address) - 1
        for n in range(first, min(last, first + 65536) + 1):
            ip = str(ipaddress.ip_address(n))
            if ip not in used:
                used.add(ip)
                return ip
        return None

    def _alloc_port(self, used):
        lo, hi = self.o["node_port_range"]
        for p in range(lo, hi + 1):
            if p not in used:
                used.add(p)
                return p
        return None

    def _svc_allocate(self, obj, old, key, errs):
        spec = obj["spec"]
        ospec = old["spec"] if old is not None else None
        if ospec is not None and _needs_cluster_ip(ospec) and _needs_cluster_ip(spec):
            # patchAllocatedValues: keep what the client did not repeat
            if not spec.get("clusterIP") and ospec.get("clusterIP"):
                spec["clusterIP"] = ospec["clusterIP"]
            if not spec.get("clusterIPs") and ospec.get("clusterIPs"):
                spec["clusterIPs"] = list(ospec["clusterIPs"])
            if spec.get("ipFamilyPolicy") is None and ospec.get("ipFamilyPolicy") is not None:
                spec["ipFamilyPolicy"] = ospec["ipFamilyPolicy"]
            if not spec.get("ipFamilies") and ospec.get("ipFamilies"):
                spec["ipFamilies"] = list(ospec["ipFamilies"])
        if ospec is not None and _needs_node_port(ospec) and _needs_node_port(spec):
            oldp = {p.get("nodePort", 0) for p in ospec.get("ports") or []}
            newp = {p.get("nodePort", 0) for p in spec.get("ports") or []}
            both = oldp & newp
            byname = {p.get("name", ""): p.get("nodePort", 0) for p in ospec.get("ports") or []}
            for p in spec.get("ports") or []:
                if not p.get("nodePort"):
                    v = byname.get(p.get("name", ""), 0)
                    if v and v not in both:
                        p["nodePort"] = v
        if ospec is not None and _needs_hc_node_port(ospec) and _needs_hc_node_port(spec) \
                and not spec.get("healthCheckNodePort"):
            if ospec.get("healthCheckNodePort"):
                spec["healthCheckNodePort"] = ospec["healthCheckNodePort"]
        if not _needs_cluster_ip(spec):
            return
        used_ips, used_ports = self._svc_used(key)
        headless = spec.get("clusterIP") == "None"
        ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP")
                                              else []))
        if spec.get("clusterIP") and ips and ips[0] != spec["clusterIP"]:
            errs.append(Invalid("spec.clusterIPs[0]", ips[0], "must match clusterIP when set"))
            return
        fams = list(spec.get("ipFamilies") or [])
        pol = spec.get("ipFamilyPolicy")
        if not fams and ips and not headless:
            fams = ["IPv4" if (parse_ip(ip) and parse_ip(ip).version == 4) else "IPv6"
                    for ip in ips[:2]]
        if pol is None:
            pol = "RequireDualStack" if len(fams) > 1 else "SingleStack"
        for i, f in enumerate(fams):
            if f in ("IPv4", "IPv6") and f not in self.families:
                errs.append(Invalid("spec.ipFamilies[%d]" % i, f,
                                    "not configured on this cluster"))
        if pol == "RequireDualStack" and len(self.families) < 2:
            errs.append(Invalid("spec.ipFamilyPolicy", pol,
                                "this cluster is not configured for dual-stack services"))
        if pol == "SingleStack" and len(fams) > 1:
            errs.append(Invalid("spec.ipFamilyPolicy", pol,
                                "must be 'RequireDualStack' or 'PreferDualStack' when "
                                "multiple IP families are specified"))
        if errs:
            return
        if not fams:
            fams = [self.families[0]]
        if pol in ("PreferDualStack", "RequireDualStack") and len(fams) == 1 and \
                len(self.families) == 2:
            fams.append([f for f in self.families if f != fams[0]][0])
        spec["ipFamilies"] = fams
        spec["ipFamilyPolicy"] = pol
        if headless:
            spec["clusterIPs"] = ["None"]
        else:
            old_ips = set((ospec or {}).get("clusterIPs") or [])
            for i, fam in enumerate(fams):
                if i < len(ips):
                    ip = ips[i]
                    pip = parse_ip(ip)
                    if pip is None:
                        errs.append(Invalid("spec.clusterIPs[%d]" % i, ip, is_valid_ip(ip)[0]))
                        continue
                    if ("IPv4" if pip.version == 4 else "IPv6") != fam:
                        errs.append(Invalid("spec.clusterIPs[%d]" % i, ip,
                                            "expected an %s value as indicated by "
                                            "`ipFamilies[%d]`" % (fam, i)))
                        continue
                    if ip in old_ips:
                        continue
                    shown = _GoRepr("[]string{%s}" % ", ".join(_go_quote(x) for x in ips))
                    if pip not in self.cidrs[fam]:
                        errs.append(Invalid("spec.clusterIPs", shown,
                                            "failed to allocate IP %s: the provided IP (%s) is"
                                            " not in the valid range. The range of valid IPs "
                                            "is %s" % (ip, ip, self.cidrs[fam])))
                    elif ip in used_ips:
                        errs.append(Invalid("spec.clusterIPs", shown,
                                            "failed to allocate IP %s: provided IP is already "
                                            "allocated" % ip))
                    else:
                        used_ips.add(ip)
                else:
                    ip = self._alloc_ip(fam, used_ips)
                    if ip is None:
                        errs.append(Invalid("spec.clusterIPs", _GoRepr("[]string{}"),
                                            "failed to allocate a serviceIP: range is full"))
                        continue
                    ips.append(ip)
            spec["clusterIPs"] = ips[:len(fams)]
            if ips:
                spec["clusterIP"] = ips[0]
        lo, hi = self.o["node_port_range"]
        if _needs_node_port(spec):
            want = spec["type"] == "NodePort" or spec.get("allocateLoadBalancerNodePorts") \
                is not False
            old_ports = {p.get("nodePort") for p in (ospec or {}).get("ports") or []}
            for i, p in enumerate(spec.get("ports") or []):
                np = p.get("nodePort", 0)
                if np:
                    if np in old_ports:
                        continue
                    if not lo <= np <= hi:
                        errs.append(Invalid("spec.ports[%d].nodePort" % i, np,
                                            "provided port is not in the valid range. The "
                                            "range of valid ports is %d-%d" % (lo, hi)))
                    elif np in used_ports:
                        errs.append(Invalid("spec.ports[%d].nodePort" % i, np,
                                            "provided port is already allocated"))
                    else:
                        used_ports.add(np)
                elif want:
                    p["nodePort"] = self._alloc_port(used_ports)
        if _needs_hc_node_port(spec) and not spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = self._alloc_port(used_ports)

    # ---- reads ------------------------------------------------------------------------

    def selectors(self, kd, q):
        try:
            lsel = LabelSelector(q.get("labelSelector", ""))
            fsel = FieldSelector(q.get("fieldSelector", ""), kd.field_labels)
        except SelectorError as e:
            raise err_bad_request(str(e)) from None
        return lsel, fsel

    def op_get(self, kd, ns, name):
        with self.lock:
            cur = self.objs.get((kd.resource, ns, name))
            if cur is None:
                raise err_not_found(kd.resource, name)
            return cur

    def op_list(self, kd, ns, q):
        lsel, fsel = self.selectors(kd, q)
        limit = _parse_int("limit", q["limit"]) if q.get("limit") not in (None, "") else 0
        if limit < 0:
            raise err_bad_request("list limit must not be negative")
        cont = q.get("continue") or ""
        rvs = q.get("resourceVersion")
        match = q.get("resourceVersionMatch") or ""
        lerrs = []
        if match:
            if match not in ("Exact", "NotOlderThan"):
                lerrs.append(NotSupported("resourceVersionMatch", match,
                                          ["Exact", "NotOlderThan"]))
            elif not rvs:
                lerrs.append(Forbidden("resourceVersionMatch", "resourceVersionMatch is "
                                       "forbidden unless resourceVersion is provided"))
            elif cont:
                lerrs.append(Forbidden("resourceVersionMatch", "resourceVersionMatch is "
                                       "forbidden when continue is provided"))
            elif match == "Exact" and rvs == "0":
                lerrs.append(Forbidden("resourceVersionMatch", 'resourceVersionMatch "exact"'
                                       ' is forbidden for resourceVersion "0"'))
        if q.get("sendInitialEvents") not in (None, ""):
            lerrs.append(Forbidden("sendInitialEvents", "sendInitialEvents is forbidden for "
                                                        "list"))
        if lerrs:
            raise err_invalid("ListOptions", "", lerrs, group="meta.k8s.io")
        with self.lock:
            start = None
            if cont:
                if rvs not in (None, "", "0"):
                    raise err_bad_request("specifying resource version is not allowed when "
                                          "using continue")
                start, trv = _decode_continue(cont)
                if trv < 0 or trv >= self.rv:
                    state, list_rv = self.objs, self.rv
                elif trv < self.floor:
                    raise err_expired(INCONSISTENT_CONTINUE, _encode_continue(start, -1))
                else:
                    state, list_rv = self.state_at(trv), trv
            else:
                rv = _parse_rv(rvs)
                if rv is None or rv == 0:
                    state, list_rv = self.objs, self.rv
                    if rv == 0 and self.o["rv0_ignores_limit"]:
                        limit = 0
                else:
                    exact = match == "Exact" or (not match and limit > 0)
                    if rv > self.rv:
                        self.cond.wait_for(lambda: self.rv >= rv or self.stopping.is_set(),
                                           self.o["too_large_rv_wait"])
                        if rv > self.rv:
                            raise err_too_large_rv(rv, self.rv)
                    if exact:
                        if rv < self.floor:
                            raise err_expired("The resourceVersion for the provided list is "
                                              "too old.")
                        state, list_rv = self.state_at(rv), rv
                    else:
                        state, list_rv = self.objs, self.rv

            def rel(k):
                return k[2] if ns is not None else k[1] + "/" + k[2]
            keys = sorted((k for k in state if k[0] == kd.resource and
                           (ns is None or k[1] == ns)), key=lambda k: k[1] + "/" + k[2])
            if start is not None:
                keys = [k for k in keys if rel(k) >= start]
            items, last, more, idx = [], None, False, 0
            for idx, k in enumerate(keys):
                if limit and len(items) == limit:
                    more = True
                    break
                o = state[k]
                last = k
                if lsel.matches(_meta(o).get("labels")) and fsel.matches(kd.fields(o)):
                    items.append({kk: vv for kk, vv in o.items()
                                  if kk not in ("kind", "apiVersion")})
            lm = {"resourceVersion": str(list_rv)}
            if more:
                lm["continue"] = _encode_continue(rel(last) + "\x00", list_rv)
                if lsel.empty() and fsel.empty():
                    lm["remainingItemCount"] = len(keys) - idx
            return {"kind": kd.list_kind, "apiVersion": "v1", "metadata": lm, "items": items}

    # ---- writes -----------------------------------------------------------------------

    def _check_namespace_exists(self, ns):
        if self.namespaces is not None and ns not in self.namespaces:
            raise err_not_found("namespaces", ns)

    def op_create(self, kd, ns, raw, ctx):
        obj, warnings = self.decode_object(kd, raw)
        with self.lock:
            return self._create_locked(kd, ns, obj, ctx), warnings

    def _create_locked(self, kd, ns, obj, ctx):
        meta = obj["metadata"]
        if meta.get("namespace") and meta["namespace"] != ns:
            raise err_bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
        self._check_namespace_exists(ns)
        meta["namespace"] = ns
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
                  "managedFields"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.now()
        generated = False
        if meta.get("generateName") and not meta.get("name"):
            meta["name"] = self._generate_name(meta["generateName"])
            generated = True
        errs = []
        if kd.resource == "services":
            obj["status"] = {}
            _service_defaults(obj)
            if meta.get("name"):
                self._svc_allocate(obj, None, (kd.resource, ns, meta["name"]), errs)
        if not errs:
            validate_object_meta(meta, kd.name_fn, errs)
            VALIDATORS[kd.resource](obj, None, errs)
        if errs:
            raise err_invalid(kd.kind, meta.get("name", ""), errs)
        name = meta["name"]
        for _ in range(8):
            existing = self.objs.get((kd.resource, ns, name))
            if existing is None or not generated:
                break
            name = meta["name"] = self._generate_name(meta["generateName"])
        if existing is not None:
            e = err_already_exists(kd.resource, name)
            if _meta(existing).get("deletionTimestamp"):
                e.message = "object is being deleted: " + e.message
            raise e
        if meta.get("resourceVersion"):
            raise ApiError(500, "", "resourceVersion should not be set on objects to be "
                                    "created")
        _update_managed_fields(obj, None, ctx["manager"], None, self.now())
        return self._commit(kd, ns, name, "ADDED", self.recanon(kd, obj))

    def op_update(self, kd, ns, name, raw, ctx, sub=None):
        obj, warnings = self.decode_object(kd, raw)
        m = obj["metadata"]
        if m.get("name", "") != name:
            raise err_bad_request("the name of the object (%s) does not match the name on "
                                  "the URL (%s)" % (m.get("name", ""), name))
        if m.get("namespace") and m["namespace"] != ns:
            raise err_bad_request("the namespace of the object (%s) does not match the "
                                  "namespace on the request (%s)" % (m["namespace"], ns))
        with self.lock:
            cur = self.objs.get((kd.resource, ns, name))
            if cur is None:
                if sub or not kd.create_on_update:
                    raise err_not_found(kd.resource, name)
                m.pop("resourceVersion", None)
                return 201, self._create_locked(kd, ns, obj, ctx), warnings
            return 200, self._update_locked(kd, ns, name, cur, obj, ctx, sub, True), warnings

    def op_patch(self, kd, ns, name, ctype, body, ctx, sub=None):
        if ctype not in PATCH_TYPES[:3]:
            raise err_unsupported_media_type()
        try:
            patch = json_loads(body)
        except ValueError as e:
            raise err_bad_request("error decoding patch: %s" % _json_error_text(e)) from None
        if ctype == "application/json-patch+json":
            if not isinstance(patch, list):
                raise err_bad_request("error decoding patch: json: cannot unmarshal %s into "
                                      "Go value of type []handlers.jsonPatchOp"
                                      % _jtype(patch))
            for op in patch:
                if not isinstance(op, dict):
                    raise err_bad_request("error decoding patch: json: cannot unmarshal %s "
                                          "into Go value of type handlers.jsonPatchOp"
                                          % _jtype(op))
                for f in ("op", "path", "from"):
                    if f in op and op[f] is not None and not isinstance(op[f], str):
                        raise err_bad_request("error decoding patch: json: cannot unmarshal "
                                              "%s into Go struct field jsonPatchOp.%s of type "
                                              "string" % (_jtype(op[f]), f))
            if len(patch) > 10000:
                raise err_entity_too_large("The allowed maximum operations in a JSON patch "
                                           "is 10000, got %d" % len(patch))
        else:
            if patch is None:
                raise err_bad_request("Invalid JSON Patch")
            if not isinstance(patch, dict):
                raise err_bad_request("error decoding patch: json: cannot unmarshal %s into "
                                      "Go value of type map[string]interface {}"
                                      % _jtype(patch))
        with self.lock:
            cur = self.objs.get((kd.resource, ns, name))
            if cur is None:
                raise err_not_found(kd.resource, name)
            doc = copy.deepcopy(cur)
            if ctype == "application/merge-patch+json":
                patched = merge_patch(doc, patch)
            elif ctype == "application/json-patch+json":
                try:
                    patched = json_patch(doc, patch)
                except JsonPatchError as e:
                    raise err_generic_422(str(e)) from None
            else:
                try:
                    patched = strategic_merge_patch(doc, patch)
                except SmpError as e:
                    raise err_invalid("", "", [Invalid("patch", json_dumps(patch),
                                                       str(e))]) from None
            obj, warnings = self.decode_object(kd, patched, for_patch=True)
            m = obj["metadata"]
            if m.get("name", "") != name:
                raise err_bad_request("the name of the object (%s) does not match the name "
                                      "on the URL (%s)" % (m.get("name", ""), name))
            if m.get("namespace") and m["namespace"] != ns:
                raise err_bad_request("the namespace of the object (%s) does not match the "
                                      "namespace on the request (%s)" % (m["namespace"], ns))
            return self._update_locked(kd, ns, name, cur, obj, ctx, sub, False), warnings

    def _update_locked(self, kd, ns, name, cur, obj, ctx, sub, uid_precondition):
        key = (kd.resource, ns, name)
        meta = obj["metadata"]
        cmeta = _meta(cur)
        if not meta.get("namespace"):
            meta["namespace"] = ns
        if uid_precondition and meta.get("uid") and meta["uid"] != cmeta.get("uid"):
            raise err_conflict(kd.resource, name, "Precondition failed: UID in precondition: "
                               "%s, UID in object meta: %s" % (meta["uid"], cmeta.get("uid")))
        rvs = meta.get("resourceVersion", "")
        if rvs:
            _parse_rv(rvs)
            if rvs != cmeta.get("resourceVersion"):
                raise err_conflict(kd.resource, name)
        meta["resourceVersion"] = cmeta.get("resourceVersion", "")
        # rest.BeforeUpdate
        meta["generation"] = cmeta.get("generation", 0) if isinstance(
            cmeta.get("generation", 0), int) else 0
        if not meta.get("uid"):
            meta["uid"] = cmeta.get("uid", "")
        if cmeta.get("creationTimestamp"):
            meta["creationTimestamp"] = cmeta["creationTimestamp"]
        errs = []
        if cmeta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = cmeta["deletionTimestamp"]
            if meta.get("deletionGracePeriodSeconds") is None and \
                    cmeta.get("deletionGracePeriodSeconds") is not None:
                meta["deletionGracePeriodSeconds"] = cmeta["deletionGracePeriodSeconds"]
        elif meta.get("deletionTimestamp"):
            errs.append(Invalid("metadata.deletionTimestamp", meta["deletionTimestamp"],
                                "field is immutable; may only be changed via deletion"))
        if meta.get("deletionGracePeriodSeconds") != cmeta.get("deletionGracePeriodSeconds"):
            errs.append(Invalid("metadata.deletionGracePeriodSeconds",
                                meta.get("deletionGracePeriodSeconds"),
                                "field is immutable; may only be changed via deletion"))
        meta.pop("selfLink", None)
        try:
            old = self.recanon(kd, cur)
        except DecodeError as e:
            raise err_internal("unable to decode the stored object: %s" % e) from None
        if kd.resource == "services":
            if sub == "status":
                obj["spec"] = copy.deepcopy(old["spec"])
                # Defaulting runs on every decoded body, status writes included.
                _service_defaults(obj)
            else:
                _service_defaults(obj)
                self._svc_allocate(obj, old, key, errs)
                obj["status"] = copy.deepcopy(old["status"])
                _drop_type_dependent_fields(obj, old)
        if not errs:
            validate_object_meta(meta, kd.name_fn, errs)
            validate_object_meta_update(obj, old, errs)
            if sub == "status":
                _validate_lb_status(obj, errs)
            else:
                VALIDATORS[kd.resource](obj, old, errs)
        if errs:
            raise err_invalid(kd.kind, name, errs)
        _update_managed_fields(obj, old, ctx["manager"], sub, self.now())
        obj = self.recanon(kd, obj)
        if _strict_equal(_without(obj, "managedFields", "resourceVersion"),
                         _without(cur, "managedFields", "resourceVersion")):
            return cur          # a no-op write: nothing stored, no event, same RV
        if not meta.get("finalizers") and cmeta.get("deletionTimestamp") and \
                not cmeta.get("deletionGracePeriodSeconds"):
            self._commit(kd, ns, name, "DELETED", None)
            return obj
        return self._commit(kd, ns, name, "MODIFIED", obj)

    def op_delete(self, kd, ns, name, body, q):
        pre_uid = pre_rv = None
        opts = {}
        if body:
            try:
                opts = json_loads(body)
            except ValueError as e:
                raise err_bad_request("couldn't get version/kind; json parse error: %s"
                                      % _json_error_text(e)) from None
            if not isinstance(opts, dict):
                raise err_bad_request("couldn't get version/kind; json parse error: json: "
                                      "cannot unmarshal %s into Go value of type struct"
                                      % _jtype(opts))
            pre = opts.get("preconditions") or {}
            if not isinstance(pre, dict):
                raise err_bad_request("json: cannot unmarshal %s into Go struct field "
                                      "DeleteOptions.preconditions of type v1.Preconditions"
                                      % _jtype(pre))
            pre_uid, pre_rv = pre.get("uid"), pre.get("resourceVersion")
        dry = opts.get("dryRun") or q.get("dryRun")
        if dry:
            raise err_bad_request("dryRun is not implemented by the fake API server")
        pol = opts.get("propagationPolicy") or q.get("propagationPolicy")
        if pol and pol not in ("Orphan", "Background", "Foreground"):
            raise err_invalid("DeleteOptions", "", [NotSupported(
                "propagationPolicy", pol, ["Foreground", "Background", "Orphan", "nil"])],
                group="meta.k8s.io")
        with self.lock:
            cur = self.objs.get((kd.resource, ns, name))
            if cur is None:
                raise err_not_found(kd.resource, name)
            cmeta = _meta(cur)
            if pre_uid is not None and pre_uid != cmeta.get("uid"):
                raise err_conflict(kd.kind, name, "the UID in the precondition (%s) does not "
                                   "match the UID in record (%s). The object might have been "
                                   "deleted and then recreated" % (pre_uid, cmeta.get("uid")))
            if pre_rv is not None and pre_rv != cmeta.get("resourceVersion"):
                raise err_conflict(kd.kind, name, "the ResourceVersion in the precondition "
                                   "(%s) does not match the ResourceVersion in record (%s). "
                                   "The object might have been modified"
                                   % (pre_rv, cmeta.get("resourceVersion")))
            fins = cmeta.get("finalizers")
            if isinstance(fins, list) and fins:
                if cmeta.get("deletionTimestamp"):
                    return cur
                new = copy.deepcopy(cur)
                m = new["metadata"]
                if isinstance(m.get("generation"), int) and m["generation"] > 0:
                    m["generation"] += 1
                m["deletionTimestamp"] = self.now()
                m["deletionGracePeriodSeconds"] = 0
                try:
                    new = self.recanon(kd, new)
                except DecodeError:
                    pass
                return self._commit(kd, ns, name, "MODIFIED", new)
            self._commit(kd, ns, name, "DELETED", None)
            if kd.return_deleted:
                return cur
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": _details(name=name, kind=kd.resource,
                                        uid=_s(cmeta.get("uid")))}

    # ---- watch ------------------------------------------------------------------------

    def op_watch(self, kd, ns, q, path):
        lsel, fsel = self.selectors(kd, q)
        rvs = q.get("resourceVersion")
        match = q.get("resourceVersionMatch") or ""
        bookmarks = _parse_bool("allowWatchBookmarks", q["allowWatchBookmarks"]) \
            if q.get("allowWatchBookmarks") not in (None, "") else False
        sie = _parse_bool("sendInitialEvents", q["sendInitialEvents"]) \
            if q.get("sendInitialEvents") not in (None, "") else None
        timeout = _parse_int("timeoutSeconds", q["timeoutSeconds"]) \
            if q.get("timeoutSeconds") not in (None, "") else 0
        if timeout <= 0:        # unset or 0: the server's own request timeout
            timeout = self.o["watch_timeout"]
        lerrs = []
        if sie is not None:
            if match != "NotOlderThan":
                lerrs.append(Forbidden("resourceVersionMatch", "sendInitialEvents requires "
                                       "setting resourceVersionMatch to NotOlderThan"))
        elif match:
            lerrs.append(Forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden"
                                   " for watch unless sendInitialEvents is provided"))
        if q.get("continue"):
            lerrs.append(Forbidden("continue", "continue is forbidden for watch"))
        if lerrs:
            raise err_invalid("ListOptions", "", lerrs, group="meta.k8s.io")
        rv = _parse_rv(rvs)
        with self.lock:
            w = _Watcher(kd, ns, lsel, fsel, self.rv, self.o["watch_queue_size"], path)
            initial, error = [], None
            if sie or (sie is None and not rv):
                keys = sorted((k for k in self.objs if k[0] == kd.resource and
                               (ns is None or k[1] == ns)), key=lambda k: k[1] + "/" + k[2])
                for k in keys:
                    o = self.objs[k]
                    if w.matches(o):
                        initial.append(("event", "ADDED", o))
                if sie and bookmarks:
                    initial.append(("bookmark", self.rv, True))
            elif sie is False and not rv:
                pass
            elif rv < self.watch_floor[kd.resource]:
                error = ApiError(410, "Expired", "too old resource version: %d (%d)"
                                 % (rv, self.watch_floor[kd.resource])).status()
            else:
                w.start_rv = rv
                for ch in self.watch_history[kd.resource]:
                    if ch.rv > rv:
                        ev = w.translate(ch)
                        if ev is not None:
                            initial.append(("event",) + ev)
                w.start_rv = max(rv, self.rv)
            if error is None:
                self.watchers.add(w)
                self.cond.notify_all()
            return w, initial, error, timeout, bookmarks

    def render(self, kd, item):
        if item[0] == "event":
            return (json_dumps({"type": item[1], "object": item[2]}) + "\n").encode()
        if item[0] == "bookmark":
            meta = {"resourceVersion": str(item[1])}
            if item[2]:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = canonical(kd.schema, kd.kind, {"metadata": meta})
            return (json_dumps({"type": "BOOKMARK", "object": obj}) + "\n").encode()
        if item[0] == "raw":
            return item[1]
        raise AssertionError(item)

    def take_watch_error(self, path):
        """The Status of a fail_next_watches rule matching path (used up), or None."""
        with self.http.fault_lock:
            for r in self.watch_errors:
                if r["remaining"] > 0 and (r["path_prefix"] is None or
                                           path.startswith(r["path_prefix"])):
                    r["remaining"] -= 1
                    return err_generic(r["code"], message=r["message"],
                                       retry_after=r["retry_after"], body="status").status()
        return None

    def serve_watch(self, h, kd, ns, q, path):
        injected = self.take_watch_error(path)
        if injected is not None:
            h.start_stream()
            h.write_chunk((json_dumps({"type": "ERROR", "object": injected}) + "\n").encode())
            h.end_stream()
            return
        w, initial, error, timeout, bookmarks = self.op_watch(kd, ns, q, path)
        try:
            h.start_stream()
            if error is not None:
                h.write_chunk((json_dumps({"type": "ERROR", "object": error}) + "\n")
                              .encode())
                h.end_stream()
                return
            w.sock = h.connection
            for item in initial:
                if w.closed == "drop":
                    raise _Dropped()
                h.write_chunk(self.render(kd, item))
            start = time.monotonic()
            deadline = start + timeout
            freq = self.o["bookmark_interval"]
            next_bm = _next_bookmark(start, deadline, freq) if bookmarks else None
            while True:
                gone = False
                with w.cond:
                    while True:
                        if w.closed or self.stopping.is_set():
                            break
                        if w.items and not self.hold.is_set():
                            break
                        now = time.monotonic()
                        t = deadline - now
                        if next_bm is not None:
                            t = min(t, next_bm - now)
                        if t <= 0:
                            break
                        # wake up now and then to notice a client that went away, as
                        # the real server does through the request context
                        if not w.cond.wait(min(t, 0.5)) and _peer_gone(h.connection):
                            gone = True
                            break
                    closed = w.closed
                    items = []
                    if not self.hold.is_set():
                        items = list(w.items)
                        w.items.clear()
                if closed == "drop" or gone:
                    raise _Dropped()
                if closed or self.stopping.is_set():
                    break
                for item in items:
                    h.write_chunk(self.render(kd, item))
                now = time.monotonic()
                if now >= deadline:
                    break
                if next_bm is not None and now >= next_bm:
                    with self.lock:
                        if self.rv >= w.start_rv:
                            w.offer(("bookmark", self.rv, False))
                    next_bm = _next_bookmark(now, deadline, freq)
            h.end_stream()
        finally:
            with self.lock:
                self.watchers.discard(w)
                self.cond.notify_all()


def _peer_gone(sock):
    """True when the client closed its end (readable with nothing to read)."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        return bool(r) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _next_bookmark(now, deadline, freq):
    hb = now + freq
    pre = deadline - 2.0
    if pre < hb:
        hb = pre
    return hb if hb >= now else None


def _validate_lb_status(obj, errs):
    for i, ing in enumerate(obj.get("status", {}).get("loadBalancer", {}).get("ingress")
                            or []):
        p = "status.loadBalancer.ingress[%d]" % i
        ip = ing.get("ip", "")
        if ip:
            for m in is_valid_ip(ip):
                errs.append(Invalid(p + ".ip", ip, m))
        hn = ing.get("hostname", "")
        if hn:
            for m in is_dns1123_subdomain(hn):
                errs.append(Invalid(p + ".hostname", hn, m))
            if parse_ip(hn):
                errs.append(Invalid(p + ".hostname", hn, "must be a DNS name, not an IP "
                                                         "address"))
        mode = ing.get("ipMode")
        if mode is not None:
            if not ip:
                errs.append(Forbidden(p + ".ipMode", "may not be specified when `ip` is "
                                                     "not set"))
            elif mode not in ("VIP", "Proxy"):
                errs.append(NotSupported(p + ".ipMode", mode, ["Proxy", "VIP"]))


# --------------------------------------------------------------------------------------
# the HTTP surface: routing, authentication, authorization, fault injection

DEFAULT_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")


def _api_v1_resources():
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    res = []
    for name, kind, short in (("configmaps", "ConfigMap", ["cm"]), ("events", "Event", ["ev"]),
                              ("namespaces", "Namespace", ["ns"]),
                              ("services", "Service", ["svc"])):
        r = {"name": name, "singularName": kind.lower(), "namespaced": name != "namespaces",
             "kind": kind, "verbs": ["get", "list"] if name == "namespaces" else verbs}
        if short:
            r["shortNames"] = short
        res.append(r)
        if name == "services":
            res.append({"name": "services/status", "singularName": "", "namespaced": True,
                        "kind": "Service", "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": res}


class _ApiHttp:
    """Request handling on top of _Api (kept apart from the data operations)."""

    def __init__(self, api):
        self.api = api
        self.fault_lock = threading.Lock()

    # ---- authentication / authorization ------------------------------------------------

    def authenticate(self, headers):
        a = self.api
        tokens = a.tokens
        if tokens is None:
            return a.o["user"]
        authz = headers.get("Authorization")
        if authz is None:
            if a.o["anonymous_auth"]:
                return "system:anonymous"
            raise err_unauthorized()
        parts = authz.split(None, 1)
        if len(parts) != 2 or parts[0].lower() != "bearer" or parts[1].strip() not in tokens:
            raise err_unauthorized()
        return a.o["user"]

    def authorize(self, user, verb, res, sub, ns, name):
        denied = user == "system:anonymous"
        with self.fault_lock:
            for r in self.api.denials:
                if all(r[k] is None or r[k] == v for k, v in (
                        ("verb", verb), ("resource", res), ("subresource", sub),
                        ("namespace", ns), ("name", name))):
                    denied = True
        if not denied:
            return
        full = res + ("/" + sub if sub else "")
        if ns:
            tail = 'User "%s" cannot %s resource "%s" in API group "" in the namespace "%s"' \
                   % (user, verb, full, ns)
        else:
            tail = 'User "%s" cannot %s resource "%s" in API group "" at the cluster scope' \
                   % (user, verb, full)
        msg = ('%s "%s" is forbidden: %s' % (res, name, tail)) if name else \
            ('%s is forbidden: %s' % (res, tail))
        raise ApiError(403, "Forbidden", msg, _details(name=name or "", kind=res))

    # ---- faults -----------------------------------------------------------------------

    @staticmethod
    def _rule_matches(r, method, path):
        return (r["path_prefix"] is None or path.startswith(r["path_prefix"])) and \
               (r["method"] is None or r["method"] == method)

    def apply_faults(self, method, path):
        delay, release = 0.0, None
        with self.fault_lock:
            for r in self.api.delays:
                if self._rule_matches(r, method, path) and r["count"] != 0:
                    if r["count"] is not None:
                        r["count"] -= 1
                    delay, release = r["seconds"], r.get("release")
                    break
        if release is not None:
            release.wait(delay)
        elif delay > 0:
            self.api.stopping.wait(delay)
        with self.fault_lock:
            for r in self.api.faults:
                if r["remaining"] > 0 and self._rule_matches(r, method, path):
                    r["remaining"] -= 1
                    raise err_generic(r["code"], r["reason"], r["message"], r["retry_after"],
                                      r["body"])

    # ---- routing ----------------------------------------------------------------------

    @staticmethod
    def route(path):
        if not path.startswith("/api/v1/"):
            raise err_path_not_found()
        parts = [unquote(p) for p in path[len("/api/v1/"):].split("/")]
        legacy_watch = False
        if parts and parts[0] == "watch":
            legacy_watch = True
            parts = parts[1:]
        if not parts or any(p == "" for p in parts):
            raise err_path_not_found()
        ns = None
        if parts[0] == "namespaces":
            if len(parts) <= 2:
                return "namespaces", None, parts[1] if len(parts) == 2 else None, None, \
                    legacy_watch
            ns, res, rest = parts[1], parts[2], parts[3:]
        else:
            res, rest = parts[0], parts[1:]
            if rest:
                raise err_path_not_found()
        if res not in KINDS or len(rest) > 2:
            raise err_path_not_found()
        name = rest[0] if rest else None
        sub = rest[1] if len(rest) == 2 else None
        if sub is not None and not (res == "services" and sub == "status"):
            raise err_path_not_found()
        if legacy_watch and sub is not None:
            raise err_path_not_found()
        return res, ns, name, sub, legacy_watch

    def handle(self, h, method, path, query, body):
        a = self.api
        q = {}
        for k, v in parse_qs(query, keep_blank_values=True).items():
            q[k] = v[0]
        user = self.authenticate(h.headers)
        self.apply_faults(method, path)
        if path in PUBLIC_PATHS or path in ("/api", "/api/v1"):
            if method not in ("GET", "HEAD"):
                raise err_method_not_allowed()
            if user == "system:anonymous" and path not in PUBLIC_PATHS:
                raise ApiError(403, "Forbidden", 'forbidden: User "system:anonymous" cannot '
                                                 'get path "%s"' % path, {})
            if path == "/version":
                return h.send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0",
                                         "gitCommit": "fake-apiserver", "gitTreeState": "clean",
                                         "buildDate": "2024-08-13T07:28:49Z",
                                         "goVersion": "go1.22.5", "compiler": "gc",
                                         "platform": "linux/amd64"})
            if path == "/api":
                return h.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                         "serverAddressByClientCIDRs": [{
                                             "clientCIDR": "0.0.0.0/0",
                                             "serverAddress": "127.0.0.1:%d"
                                                              % h.server.server_port}]})
            if path == "/api/v1":
                return h.send_json(200, _api_v1_resources())
            return h.send_text(200, "ok")
        res, ns, name, sub, legacy_watch = self.route(path)
        watch = legacy_watch or (q.get("watch") not in (None, "") and
                                 _parse_bool("watch", q["watch"]))
        if name is None:
            verb = {"GET": "watch" if watch else "list", "POST": "create",
                    "DELETE": "deletecollection"}.get(method)
        else:
            verb = {"GET": "watch" if watch else "get", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete"}.get(method)
        if res == "namespaces":
            if method != "GET" or watch:
                raise err_method_not_allowed()
            self.authorize(user, verb, res, None, None, name)
            return h.send_json(200, self.namespace(name) if name else self.namespace_list())
        if verb is None or verb == "deletecollection" or (verb == "create" and ns is None) or \
                (sub is not None and verb == "delete"):
            raise err_method_not_allowed()
        auth_name = name
        if verb in ("list", "watch") and name is None and q.get("fieldSelector"):
            # RequestInfo: a list or watch selecting one name by a field selector is
            # authorized as that name (so RBAC resourceNames can allow it).
            try:
                sel_name = FieldSelector(q["fieldSelector"], KINDS[res].field_labels) \
                    .exact_name() if res in KINDS else None
            except SelectorError:
                sel_name = None  # refused as a bad request later
            if sel_name and sel_name not in (".", "..") and not any(c in sel_name for c in "/%"):
                auth_name = sel_name
        self.authorize(user, verb, res, sub, ns, auth_name)
        kd = KINDS[res]
        ctx = {"manager": self.manager(h.headers, q)}
        if verb == "watch":
            if name is not None:
                sel = "metadata.name=" + name.replace("\\", "\\\\").replace(",", "\\,") \
                    .replace("=", "\\=")
                q["fieldSelector"] = sel + ("," + q["fieldSelector"]
                                            if q.get("fieldSelector") else "")
            return a.serve_watch(h, kd, ns, q, path)
        if verb == "list":
            return h.send_json(200, a.op_list(kd, ns, q))
        if verb == "get":
            return h.send_json(200, a.op_get(kd, ns, name))
        if verb == "create":
            obj, warns = a.op_create(kd, ns, self.body_json(kd, h, body), ctx)
            return h.send_json(201, obj, warns)
        if verb == "update":
            code, obj, warns = a.op_update(kd, ns, name, self.body_json(kd, h, body), ctx, sub)
            return h.send_json(code, obj, warns)
        if verb == "patch":
            ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            obj, warns = a.op_patch(kd, ns, name, ctype, body, ctx, sub)
            return h.send_json(200, obj, warns)
        if verb == "delete":
            return h.send_json(200, a.op_delete(kd, ns, name, body, q))
        raise err_method_not_allowed()

    @staticmethod
    def manager(headers, q):
        if q.get("fieldManager"):
            return q["fieldManager"]
        ua = headers.get("User-Agent") or ""
        return (ua.split("/", 1)[0][:128]) or "unknown"

    @staticmethod
    def body_json(kd, h, body):
        ctype = (h.headers.get("Content-Type") or "application/json").split(";")[0] \
            .strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media"
                           " types include: application/json, application/yaml, "
                           "application/vnd.kubernetes.protobuf")
        try:
            return json_loads(body)
        except ValueError as e:
            text = body[:30].decode("utf-8", "replace") + ("..." if len(body) > 30 else "")
            msg = "unexpected end of JSON input" if not body.strip() else _json_error_text(e)
            raise err_bad_request("the object provided is unrecognized (must be of type %s): "
                                  "couldn't get version/kind; json parse error: %s (%s)"
                                  % (kd.kind, msg, text)) from None

    # ---- namespaces (implicit) ----------------------------------------------------------

    def namespace(self, name):
        a = self.api
        if a.namespaces is not None and name not in a.namespaces:
            raise err_not_found("namespaces", name)
        with a.lock:
            uid = a.ns_uids.setdefault(name, str(uuid.uuid4()))
        return {"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": name, "uid": uid, "resourceVersion": "1",
                             "creationTimestamp": _now_rfc3339(0),
                             "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    def namespace_list(self):
        a = self.api
        with a.lock:
            names = set(a.namespaces) if a.namespaces is not None else \
                set(DEFAULT_NAMESPACES) | {k[1] for k in a.objs}
            rv = a.rv
        items = []
        for n in sorted(names):
            o = self.namespace(n)
            del o["kind"], o["apiVersion"]
            items.append(o)
        return {"kind": "NamespaceList", "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)}, "items": items}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"
    sys_version = ""

    def setup(self):
        self.timeout = self.server.api.o["idle_timeout"]
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle and
        # delayed ACKs hold every response on a kept-alive connection ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def version_string(self):
        return self.server_version

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    def _dispatch(self, method):
        api = self.server.api
        self._streaming = False
        url = urlsplit(self.path)
        path, query = url.path, url.query
        api.record(method, path, query, self.headers.get("Content-Type"))
        try:
            body = self._read_body()
        except ApiError as e:
            self.close_connection = True
            self.send_status(e)
            return
        try:
            api.http.handle(self, method, path, query, body)
        except _Dropped:
            self.close_connection = True
        except ApiError as e:
            if self._streaming:
                self.close_connection = True
            else:
                self.send_status(e)
        except OSError:
            self.close_connection = True
        except Exception as e:     # a bug in the fake: answer 500, remember it for tests
            import traceback
            api.internal_errors.append(traceback.format_exc())
            if self._streaming:
                self.close_connection = True
            else:
                self.send_status(err_internal("%s: %s" % (type(e).__name__, e)))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = bytearray()
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise err_bad_request("malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                if len(data) + size > MAX_REQUEST_BODY:
                    raise err_entity_too_large("limit is %d" % MAX_REQUEST_BODY)
                data += self.rfile.read(size)
                self.rfile.readline(65537)
        cl = self.headers.get("Content-Length")
        if cl:
            try:
                n = int(cl)
            except ValueError:
                raise err_bad_request("invalid Content-Length") from None
            if n > MAX_REQUEST_BODY:
                # Read and drop a moderately oversized body so the client sees
                # the 413 rather than a broken pipe; a huge one is not read.
                if n <= 4 * MAX_REQUEST_BODY:
                    left = n
                    while left > 0:
                        chunk = self.rfile.read(min(left, 1 << 16))
                        if not chunk:
                            break
                        left -= len(chunk)
                raise err_entity_too_large("limit is %d" % MAX_REQUEST_BODY)
            return self.rfile.read(n)
        return b""

    def _headers(self, code, ctype, extra):
        self.send_response(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)

    def send_json(self, code, obj, warnings=()):
        data = (json_dumps(obj) + "\n").encode()
        extra = [("Warning", '299 - "%s"' % w.replace("\\", "\\\\").replace('"', '\\"'))
                 for w in warnings]
        self._headers(code, "application/json", extra)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_text(self, code, text):
        data = text.encode()
        self._headers(code, "text/plain; charset=utf-8", [("X-Content-Type-Options",
                                                           "nosniff")])
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_status(self, e):
        if e.text is not None:
            data = e.text.encode()
            self._headers(e.code, "text/plain; charset=utf-8",
                          list(e.headers.items()) + [("X-Content-Type-Options", "nosniff")])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        data = (json_dumps(e.status()) + "\n").encode()
        self._headers(e.code, "application/json", list(e.headers.items()))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def start_stream(self):
        self._headers(200, "application/json", [("Transfer-Encoding", "chunked")])
        self.end_headers()
        self._streaming = True

    def write_chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self._streaming = False


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, api):
        self.api = api
        self.conns = {}
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def process_request(self, request, client_address):
        with self.conns_lock:
            if self.api.stopping.is_set() or len(self.conns) >= self.api.o["max_connections"]:
                self.shutdown_request(request)
                return
            t = threading.Thread(target=self._serve_conn, args=(request, client_address),
                                 name="fake-apiserver-conn", daemon=True)
            self.conns[request] = t
        t.start()

    def _serve_conn(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            pass
        finally:
            self.shutdown_request(request)
            with self.conns_lock:
                self.conns.pop(request, None)

    def handle_error(self, request, client_address):
        pass


# --------------------------------------------------------------------------------------
# the public face

class FakeApiServer:
    """A kube-apiserver stand-in on 127.0.0.1 (see the module docstring and README.md).

    Data methods (create/get/list/update/patch/delete/...) go through the same code as
    HTTP requests and raise ApiError where the server would answer an error Status.
    Objects returned are copies."""

    def __init__(self, port=0, token=None, anonymous_auth=False,
                 user="system:serviceaccount:kube-system:k8s-adapter",
                 history_limit=1000, bookmark_interval=60.0, watch_timeout=1800,
                 watch_queue_size=1000, namespaces=None, service_cidrs=("10.96.0.0/12",),
                 node_port_range=(30000, 32767), initial_resource_version=1000,
                 too_large_rv_wait=3.0, rv0_ignores_limit=True, idle_timeout=60.0,
                 max_connections=128, request_log_limit=100000, clock=None, seed=None):
        if history_limit < 1 or watch_queue_size < 1 or max_connections < 1:
            raise ValueError("limits must be positive")
        self._opts = {
            "token": token, "anonymous_auth": anonymous_auth, "user": user,
            "history_limit": history_limit, "bookmark_interval": float(bookmark_interval),
            "watch_timeout": int(watch_timeout), "watch_queue_size": watch_queue_size,
            "namespaces": namespaces, "service_cidrs": tuple(service_cidrs),
            "node_port_range": tuple(node_port_range),
            "initial_resource_version": int(initial_resource_version),
            "too_large_rv_wait": float(too_large_rv_wait),
            "rv0_ignores_limit": rv0_ignores_limit, "idle_timeout": float(idle_timeout),
            "max_connections": max_connections, "request_log_limit": request_log_limit,
            "clock": clock or time.time, "seed": seed}
        self._port = port
        self._api = _Api(self._opts)
        self._httpd = None
        self._thread = None
        self._ctx = {"manager": "fake-apiserver-test"}

    # ---- lifecycle ------------------------------------------------------------------

    def start(self):
        if self._httpd is not None:
            raise RuntimeError("already started")
        self._httpd = _HTTPServer(("127.0.0.1", self._port), self._api)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fake-apiserver", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self):
        return self._httpd.server_port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self, timeout=10.0):
        if self._httpd is None:
            return
        a = self._api
        a.stopping.set()
        with a.http.fault_lock:
            for release in a.holds:
                release.set()
        with a.lock:
            watchers = list(a.watchers)
        for w in watchers:
            w.close("stop")
        self._httpd.shutdown()
        with self._httpd.conns_lock:
            conns = list(self._httpd.conns.items())
        for sock, _ in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        end = time.monotonic() + timeout
        for _, t in conns:
            t.join(max(0.0, end - time.monotonic()))
        self._httpd.server_close()
        self._thread.join(max(0.0, end - time.monotonic()))
        self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- data -----------------------------------------------------------------------

    def create(self, resource, obj, namespace=None):
        kd = _kind(resource)
        ns = namespace or _meta(obj).get("namespace") or "default"
        stored, _ = self._api.op_create(kd, ns, copy.deepcopy(obj), self._ctx)
        return copy.deepcopy(stored)

    def get(self, resource, namespace, name):
        """The stored object, or None."""
        try:
            return copy.deepcopy(self._api.op_get(_kind(resource), namespace, name))
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(self, resource, namespace=None, label_selector="", field_selector=""):
        q = {"labelSelector": label_selector, "fieldSelector": field_selector}
        lst = self._api.op_list(_kind(resource), namespace, q)
        return copy.deepcopy(lst["items"])

    def update(self, resource, obj, namespace=None, subresource=None):
        """PUT semantics (resourceVersion in obj is a precondition when set)."""
        kd = _kind(resource)
        ns = namespace or _meta(obj).get("namespace") or "default"
        _, stored, _ = self._api.op_update(kd, ns, _meta(obj).get("name", ""),
                                           copy.deepcopy(obj), self._ctx, subresource)
        return copy.deepcopy(stored)

    def patch(self, resource, namespace, name, patch, patch_type="merge", subresource=None):
        ctype = {"merge": "application/merge-patch+json",
                 "json": "application/json-patch+json",
                 "strategic": "application/strategic-merge-patch+json"}.get(patch_type,
                                                                           patch_type)
        body = patch if isinstance(patch, (bytes, str)) else json_dumps(patch)
        if isinstance(body, str):
            body = body.encode()
        stored, _ = self._api.op_patch(_kind(resource), namespace, name, ctype, body,
                                       self._ctx, subresource)
        return copy.deepcopy(stored)

    def update_status(self, namespace, name, status):
        """Merge-patch services/{name}/status with {"status": status}."""
        return self.patch("services", namespace, name, {"status": status},
                          subresource="status")

    def delete(self, resource, namespace, name, uid=None, resource_version=None):
        body = b""
        if uid is not None or resource_version is not None:
            pre = {}
            if uid is not None:
                pre["uid"] = uid
            if resource_version is not None:
                pre["resourceVersion"] = resource_version
            body = json_dumps({"preconditions": pre}).encode()
        return copy.deepcopy(self._api.op_delete(_kind(resource), namespace, name, body, {}))

    def put_raw(self, namespace, kind, obj, name=None):
        """Store obj verbatim (no decoding, defaulting or validation) as a write: it gets
        a new resourceVersion when it has a metadata map, and watchers see ADDED or
        MODIFIED. Meant for malformed objects that tests feed to the adapter."""
        kd = _kind(kind)
        if not isinstance(obj, dict):
            raise ValueError("put_raw stores JSON objects (dicts)")
        if name is None:
            name = _meta(obj).get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("put_raw needs a name (metadata.name or name=)")
        a = self._api
        with a.lock:
            typ = "MODIFIED" if (kd.resource, namespace, name) in a.objs else "ADDED"
            stored = a._commit(kd, namespace, name, typ, copy.deepcopy(obj))
        return copy.deepcopy(stored)

    def events(self, namespace=None, involved_name=None, reason=None, type=None):
        """core/v1 Events posted so far (oldest first by creation order of the store)."""
        a = self._api
        with a.lock:
            evs = [o for k, o in a.objs.items() if k[0] == "events" and
                   (namespace is None or k[1] == namespace)]
        out = []
        for e in evs:
            inv = e.get("involvedObject") if isinstance(e.get("involvedObject"), dict) else {}
            if involved_name is not None and inv.get("name") != involved_name:
                continue
            if reason is not None and e.get("reason") != reason:
                continue
            if type is not None and e.get("type") != type:
                continue
            out.append(copy.deepcopy(e))
        out.sort(key=lambda e: int(_meta(e).get("resourceVersion", "0") or 0))
        return out

    def resource_version(self):
        with self._api.lock:
            return self._api.rv

    def wait_until(self, predicate, timeout=10.0):
        """Wait (on the store's condition, no polling) until predicate() is true; it is
        re-evaluated after every write and watcher change. Returns the last value."""
        a = self._api
        with a.cond:
            return a.cond.wait_for(predicate, timeout)

    # ---- faults -----------------------------------------------------------------------

    def set_token(self, token, keep_old=False):
        """Require this bearer token from now on (None: no authentication)."""
        a = self._api
        if token is None:
            a.tokens = None
        elif keep_old and a.tokens is not None:
            a.tokens = set(a.tokens) | {token}
        else:
            a.tokens = {token}

    def fail_next(self, n, code=500, path_prefix=None, method=None, reason=None,
                  message=None, retry_after=None, body=None):
        """Answer the next n matching requests (after authentication) with code and a
        Status. 429 gets Retry-After (default 1) and, like the real throttling filters,
        a plain-text body unless body="status"."""
        with self._api.http.fault_lock:
            self._api.faults.append({"remaining": n, "code": code, "path_prefix": path_prefix,
                                     "method": method, "reason": reason, "message": message,
                                     "retry_after": retry_after, "body": body})

    def delay(self, seconds, path_prefix=None, method=None, count=None):
        """Hold matching requests for seconds before handling them (count: how many;
        None: until clear_faults()). stop() cuts a delay short."""
        with self._api.http.fault_lock:
            self._api.delays.append({"seconds": seconds, "path_prefix": path_prefix,
                                     "method": method, "count": count})

    def hold_requests(self, path_prefix=None, method=None, count=1, at_most=60.0):
        """Hold matching requests (count of them) until the returned Event is set,
        at_most seconds, or stop(): lets a test change things under a request that
        is in flight, however slowly it runs."""
        release = threading.Event()
        with self._api.http.fault_lock:
            self._api.delays.append({"seconds": at_most, "path_prefix": path_prefix,
                                     "method": method, "count": count, "release": release})
            self._api.holds.append(release)
        return release

    def fail_next_watches(self, n, code=500, path_prefix=None, message=None,
                          retry_after=None):
        """Accept the next n matching watch requests (200) and send each one ERROR event
        with a Status of this code, then end the stream: what kube-apiserver does when
        the storage fails under a watch it has started."""
        with self._api.http.fault_lock:
            self._api.watch_errors.append({"remaining": n, "code": code,
                                           "path_prefix": path_prefix, "message": message,
                                           "retry_after": retry_after})

    def clear_faults(self):
        with self._api.http.fault_lock:
            self._api.faults.clear()
            self._api.watch_errors.clear()
            self._api.delays.clear()

    def forbid(self, verb=None, resource=None, namespace=None, name=None, subresource=None):
        """Answer 403 (as RBAC does) for matching requests; None matches anything.
        resource may be given as "services/status"."""
        if resource and "/" in resource:
            resource, subresource = resource.split("/", 1)
        with self._api.http.fault_lock:
            self._api.denials.append({"verb": verb, "resource": resource,
                                      "namespace": namespace, "name": name,
                                      "subresource": subresource})

    def allow_all(self):
        with self._api.http.fault_lock:
            self._api.denials.clear()

    def _watchers(self, path_prefix):
        with self._api.lock:
            return [w for w in self._api.watchers
                    if path_prefix is None or w.path.startswith(path_prefix)]

    def drop_watches(self, path_prefix=None):
        """Break every open watch stream: the connection is cut with no final chunk."""
        ws = self._watchers(path_prefix)
        for w in ws:
            w.close("drop")
            s = w.sock
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return len(ws)

    def compact(self):
        """Forget the change history: watches and continue tokens from older
        resourceVersions get 410 Expired."""
        self._api.compact()

    def inject_watch_line(self, raw, path_prefix=None):
        """Send raw bytes verbatim (one chunk) on open watch streams, in order with the
        events. Returns how many streams got it."""
        if isinstance(raw, str):
            raw = raw.encode()
        ws = self._watchers(path_prefix)
        with self._api.lock:
            for w in ws:
                w.offer(("raw", bytes(raw)))
        return len(ws)

    def hold_watches(self):
        """Stop delivering events to watch streams (they queue; a queue that overflows
        watch_queue_size closes its stream, as the real server does with a watcher that
        cannot keep up)."""
        self._api.hold.set()

    def release_watches(self):
        self._api.hold.clear()
        for w in self._watchers(None):
            with w.cond:
                w.cond.notify_all()

    # ---- observation ------------------------------------------------------------------

    def request_log(self):
        with self._api.log_cond:
            return list(self._api.log)

    def clear_request_log(self):
        with self._api.log_cond:
            self._api.log.clear()

    def count_requests(self, method=None, path=None, path_prefix=None, watch=None):
        n = 0
        for r in self.request_log():
            if method is not None and r.method != method:
                continue
            if path is not None and r.path != path:
                continue
            if path_prefix is not None and not r.path.startswith(path_prefix):
                continue
            if watch is not None:
                qs = parse_qs(r.query)
                is_watch = qs.get("watch", [""])[0] in ("1", "true", "True", "t", "T",
                                                          "TRUE") or "/watch/" in r.path
                if is_watch != watch:
                    continue
            n += 1
        return n

    def wait_for_requests(self, predicate, timeout=10.0):
        """Wait until predicate(request_log) is true (no polling)."""
        c = self._api.log_cond
        with c:
            return c.wait_for(lambda: predicate(list(self._api.log)), timeout)

    def watch_count(self, path_prefix=None):
        return len(self._watchers(path_prefix))

    def wait_for_watchers(self, n, timeout=10.0, path_prefix=None):
        """Wait until at least n watch streams are registered."""
        return self.wait_until(lambda: len([w for w in self._api.watchers if
                                            path_prefix is None or
                                            w.path.startswith(path_prefix)]) >= n, timeout)

    def internal_errors(self):
        """Tracebacks of exceptions the fake itself raised while answering (bugs)."""
        return list(self._api.internal_errors)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--print-url", action="store_true", help="print the URL on stdout")
    p.add_argument("--token", help="require this bearer token")
    p.add_argument("--history", type=int, default=1000,
                   help="changes kept: per resource for watches, overall for lists")
    p.add_argument("--bookmark-interval", type=float, default=60.0)
    p.add_argument("--watch-timeout", type=int, default=1800)
    p.add_argument("--service-cidr", action="append",
                   help="service CIDR (twice for dual-stack); default 10.96.0.0/12")
    args = p.parse_args(argv)
    srv = FakeApiServer(port=args.port, token=args.token, history_limit=args.history,
                        bookmark_interval=args.bookmark_interval,
                        watch_timeout=args.watch_timeout,
                        service_cidrs=tuple(args.service_cidr or ("10.96.0.0/12",)))
    srv.start()
    if args.print_url:
        print(srv.url, flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(3600):
        pass
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
