# The ipamd image: ipamd, k8s-adapter and ipamctl on Debian 12, run as
# user 10001. deploy/kubernetes/ runs it with an explicit command per
# container; `docker run IMAGE` alone starts ipamd on /run/ipamd/ipamd.sock.
#
#   docker build -t ghcr.io/ipamd/ipamd:0.1.0 .
#
# tests/deploy/test_manifests.py checks this file: Debian 12 in both stages,
# exactly the packages the build needs in the first, a runtime package for
# every shared library the binaries load (and no -dev package or compiler) in
# the second, the binaries where the manifests run them, and their user.

FROM debian:12 AS build
# The build packages of scripts/deps (the test ones are left out): the
# toolchain and what the CMake files ask pkg-config and find_program for.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler \
      libsqlite3-dev libcurl4-openssl-dev libcjson-dev libyaml-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Installed for the prefix /usr, staged under /out (DESTDIR): /out/usr/...
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX=/usr \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/out cmake --install /build --strip

FROM debian:12-slim
# Runtime libraries only: what ldd lists for the three binaries, by Debian
# package (their own dependencies come with them).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      libgrpc29 libprotobuf-c1 libsqlite3-0 libcurl4 libcjson1 libyaml-0-2 libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 ipamd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ipamd --no-create-home \
      --shell /usr/sbin/nologin ipamd \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ipamd /run/ipamd
COPY --from=build /out/usr/sbin/ipamd /usr/sbin/ipamd
COPY --from=build /out/usr/bin/k8s-adapter /usr/bin/k8s-adapter
COPY --from=build /out/usr/bin/ipamctl /usr/bin/ipamctl
USER 10001:10001
ENV IPAMD_ADDR=unix:/run/ipamd/ipamd.sock
ENTRYPOINT ["/usr/sbin/ipamd"]
CMD ["--listen", "unix:/run/ipamd/ipamd.sock", "--data-dir", "/var/lib/ipamd"]
