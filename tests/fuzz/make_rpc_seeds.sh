#!/usr/bin/env bash
# Writes the seed inputs of fuzz_rpc (corpus/fuzz_rpc/) from readable
# protobuf text, with protoc --encode. Run it from anywhere after changing
# the proto or the seeds below; the files it writes are committed.
#
# A seed is a sequence of records: method index (1 byte, the position in
# api_methods[] of ipamd/api.c), length (2 bytes, little-endian), request.
# The store operations of the harness are 0xf0 (expire; the request is 4
# bytes, little-endian seconds from now), 0xf1 (fail the next commit) and
# 0xf2 (restart).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto="$here/../../proto"
out="$here/corpus/fuzz_rpc"
mkdir -p "$out"

# api_methods[] order.
APPLY=0 GET_POOL=1 LIST_POOLS=2 DELETE_POOL=3 ALLOCATE=4 RELEASE=5 RENEW=6 GET_LEASE=7
LIST_LEASES=8 HEALTH=10 REFLECT=12 REFLECT_ALPHA=13
declare -A TYPE=([0]=ApplyPoolRequest [1]=GetPoolRequest [2]=ListPoolsRequest
                 [3]=DeletePoolRequest [4]=AllocateRequest [5]=ReleaseRequest [6]=RenewRequest
                 [7]=GetLeaseRequest [8]=ListLeasesRequest)

seed="" # the file being written

byte() { printf "\\x$(printf %02x "$1")" >>"$seed"; }

# rec METHOD 'protobuf text': one request record.
rec() {
    local tmp
    tmp="$(mktemp)"
    if [ "$1" = "$HEALTH" ]; then
        printf '%s' "$2" | protoc --encode=grpc.health.v1.HealthCheckRequest -I"$proto" \
            grpc/health/v1/health.proto >"$tmp"
    elif [ "$1" = "$REFLECT" ] || [ "$1" = "$REFLECT_ALPHA" ]; then
        printf '%s' "$2" | protoc --encode=grpc.reflection.v1.ServerReflectionRequest \
            -I"$proto" grpc/reflection/v1/reflection.proto >"$tmp"
    else
        printf '%s' "$2" | protoc --encode="ipam.v1.${TYPE[$1]}" -I"$proto" ipam/v1/ipam.proto >"$tmp"
    fi
    local n
    n=$(stat -c %s "$tmp")
    byte "$1"
    byte $((n & 255))
    byte $((n >> 8))
    cat "$tmp" >>"$seed"
    rm -f "$tmp"
}

# op CODE [4-byte seconds]: a store operation record.
op() {
    byte "$1"
    if [ $# -gt 1 ]; then
        byte 4; byte 0
        byte $(($2 & 255)); byte $((($2 >> 8) & 255)); byte $((($2 >> 16) & 255)); byte $((($2 >> 24) & 255))
    else
        byte 0; byte 0
    fi
}

begin() { seed="$out/$1"; : >"$seed"; }

LAN='pool { name: "lan" blocks: "192.0.2.0/24" }'

begin apply-allocate-release
rec $APPLY "$LAN"
rec $ALLOCATE 'pool: "lan" owner: "vm/web-1"'
rec $ALLOCATE 'pool: "lan" owner: "vm/web-2" addresses: "192.0.2.77"'
rec $ALLOCATE 'pool: "lan" owner: "vm/web-1"'
rec $ALLOCATE 'pool: "lan" owner: "thief" addresses: "192.0.2.77"'
rec $ALLOCATE 'owner: "static-thief" addresses: "192.0.2.77"'
rec $GET_POOL 'name: "lan"'
rec $GET_LEASE 'owner: "vm/web-1"'
rec $RELEASE 'owner: "vm/web-1"'
rec $ALLOCATE 'pool: "lan" owner: "vm/web-3"'
rec $LIST_LEASES 'pool: "lan" owner_prefix: "vm/" page_size: 1'
rec $LIST_LEASES 'page_token: "vm/web-2"'
rec $LIST_POOLS ''

begin dual-stack-desc-avoid-buggy
rec $APPLY 'pool { name: "ds" blocks: "192.0.2.0/24" blocks: "2001:db8::/120" search_order: SEARCH_ORDER_DESC skip_end_ips: true avoid_buggy_ips: true }'
rec $ALLOCATE 'pool: "ds" owner: "a" family: FAMILY_REQUIRE_DUAL_STACK primary_family: FAMILY_IPV6'
rec $ALLOCATE 'pool: "ds" owner: "b" family: FAMILY_PREFER_DUAL_STACK'
rec $ALLOCATE 'pool: "ds" owner: "c" family: FAMILY_IPV6'
rec $ALLOCATE 'pool: "ds" owner: "d" addresses: "192.0.2.255"'
rec $ALLOCATE 'pool: "ds" owner: "e" addresses: "192.0.2.1" addresses: "2001:db8::1"'
rec $GET_POOL 'name: "ds"'

begin sharing-ports
rec $APPLY 'pool { name: "svc" blocks: "198.51.100.10-198.51.100.11" allow_share: true }'
rec $ALLOCATE 'pool: "svc" owner: "dns-tcp" ports { protocol: "TCP" port: 53 }'
rec $ALLOCATE 'pool: "svc" owner: "dns-udp" ports { protocol: "udp" port: 53 }'
rec $ALLOCATE 'pool: "svc" owner: "web" ports { protocol: "TCP" port: 80 } sharing_key: "k"'
rec $ALLOCATE 'pool: "svc" owner: "web2" ports { protocol: "TCP" port: 443 } sharing_key: "k" labels { key: "app" value: "web" }'
rec $ALLOCATE 'pool: "svc" owner: "full"'
rec $APPLY 'pool { name: "svc" blocks: "198.51.100.10-198.51.100.11" allow_share: false }'
rec $LIST_LEASES 'labels { key: "app" value: "web" }'

begin static-reservation-and-spaces
rec $APPLY 'pool { name: "blue" space: "blue" blocks: "10.0.0.0/30" }'
rec $ALLOCATE 'owner: "router" addresses: "10.0.0.9"'
rec $ALLOCATE 'owner: "router-blue" space: "blue" addresses: "10.0.0.8"'
rec $ALLOCATE 'owner: "bad" addresses: "10.0.0.1" space: "blue"'
rec $ALLOCATE 'pool: "blue" owner: "x"'
rec $APPLY 'pool { name: "blue" space: "green" blocks: "10.0.0.0/30" }'
rec $DELETE_POOL 'name: "blue"'
rec $DELETE_POOL 'name: "blue" force: true'

begin dhcp-pool
rec $APPLY 'pool { name: "dhcp" blocks: "0.0.0.0/32" }'
rec $ALLOCATE 'pool: "dhcp" owner: "one"'
rec $ALLOCATE 'pool: "dhcp" owner: "two"'
rec $APPLY 'pool { name: "dhcp" blocks: "192.0.2.0/24" }'
rec $RELEASE 'owner: "one"'
rec $RELEASE 'owner: "two"'
rec $APPLY 'pool { name: "dhcp" blocks: "192.0.2.0/24" }'

begin ttl-renew-expire
rec $APPLY "$LAN"
rec $ALLOCATE 'pool: "lan" owner: "t1" ttl_seconds: 60'
rec $ALLOCATE 'pool: "lan" owner: "t2" ttl_seconds: 3600'
rec $RENEW 'owner: "t1" ttl_seconds: 7200'
rec $RENEW 'owner: "t2"'
op 0xf0 3601
rec $ALLOCATE 'pool: "lan" owner: "t3" ttl_seconds: 315360001'

begin commit-failure-and-restart
rec $APPLY "$LAN"
rec $ALLOCATE 'pool: "lan" owner: "kept"'
op 0xf1
rec $ALLOCATE 'pool: "lan" owner: "lost"'
rec $ALLOCATE 'pool: "lan" owner: "after"'
op 0xf2
rec $GET_LEASE 'owner: "lost"'
rec $HEALTH 'service: "ipam.v1.Ipam"'
rec $HEALTH 'service: "nope"'

begin exhaust-small-pool
rec $APPLY 'pool { name: "tiny" blocks: "192.0.2.0/30" skip_end_ips: true }'
rec $ALLOCATE 'pool: "tiny" owner: "1"'
rec $ALLOCATE 'pool: "tiny" owner: "2"'
rec $ALLOCATE 'pool: "tiny" owner: "3"'
rec $APPLY 'pool { name: "tiny" blocks: "192.0.2.0/29" blocks: "192.0.2.4/30" }'
rec $ALLOCATE 'pool: "tiny" owner: "3"'

begin invalid-requests
rec $APPLY 'pool { name: "bad name" blocks: "192.0.2.0/24" }'
rec $APPLY 'pool { name: "v6map" blocks: "::ffff:0:0/96" }'
rec $APPLY 'pool { name: "order" blocks: "10.0.0.0/8" search_order: 7 }'
rec $ALLOCATE 'pool: "nope" owner: "x"'
rec $ALLOCATE 'owner: "has space"'
rec $ALLOCATE 'owner: "f" family: 9'
rec $LIST_LEASES 'page_size: 10001'
rec $RELEASE 'owner: "nobody"'

# Runs of used addresses bridged by .255 and .0, which a pool avoiding them
# searches past in one step.
for order in ASC DESC; do
    begin "avoid-buggy-bridges-${order,,}"
    rec $APPLY "pool { name: \"br\" blocks: \"10.0.0.250-10.0.2.5\" avoid_buggy_ips: true search_order: SEARCH_ORDER_$order }"
    rec $ALLOCATE 'pool: "br" owner: "r1" addresses: "10.0.0.255"'
    rec $ALLOCATE 'pool: "br" owner: "r2" addresses: "10.0.1.0"'
    for i in 1 2 3 4 5 6 7 8 9; do
        rec $ALLOCATE "pool: \"br\" owner: \"a$i\""
    done
    rec $RELEASE 'owner: "a3"'
    rec $ALLOCATE 'pool: "br" owner: "b1"'
    rec $ALLOCATE 'pool: "br" owner: "b2" addresses: "10.0.1.255"'
    rec $GET_POOL 'name: "br"'
done

begin labels-ports-families
rec $APPLY "$LAN"
rec $ALLOCATE 'pool: "lan" owner: "l1" labels { key: "a" value: "1" } labels { key: "a" value: "2" }'
rec $ALLOCATE 'pool: "lan" owner: "l2" ports { protocol: "ICMP" port: 1 }'
rec $ALLOCATE 'pool: "lan" owner: "l3" ports { protocol: "TCP" port: 70000 }'
rec $ALLOCATE 'pool: "lan" owner: "l4" addresses: "192.0.2.1" addresses: "192.0.2.2"'
rec $ALLOCATE 'pool: "lan" owner: "l5" family: FAMILY_IPV6 addresses: "192.0.2.3"'
rec $ALLOCATE 'owner: "l6" family: FAMILY_REQUIRE_DUAL_STACK addresses: "203.0.113.1"'
rec $ALLOCATE 'pool: "lan" owner: "l7" family: FAMILY_IPV6'
rec $ALLOCATE 'pool: "lan" owner: "l8" family: FAMILY_PREFER_DUAL_STACK labels { key: "k" value: "v" }'
rec $RENEW 'owner: "l8" ttl_seconds: 400000000'

begin reflection
rec $REFLECT 'list_services: "*"'
rec $REFLECT 'host: "h" file_containing_symbol: "ipam.v1.Ipam.Allocate"'
rec $REFLECT_ALPHA 'file_by_filename: "grpc/health/v1/health.proto"'
rec $REFLECT 'file_containing_symbol: ".grpc.health.v1.HealthCheckResponse.ServingStatus"'
rec $REFLECT 'file_containing_extension { containing_type: "ipam.v1.Pool" extension_number: 9 }'
rec $REFLECT 'all_extension_numbers_of_type: "ipam.v1.Pool"'
rec $REFLECT 'file_by_filename: "no/such.proto"'
rec $REFLECT 'host: "only"'

ls "$out" | wc -l
