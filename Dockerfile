# Celeriac binaries on Debian 12, built with the same ./dev script the tests use.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates procps \
 && ./dev build

# The runtime stage installs the Debian package of every shared library the binaries link
# (with their dependencies, apt brings the rest of `ldd`'s list); tests/deploy checks it against
# the built binaries, so a library added to the build without its package here fails CI.
# Also: ca-certificates (TLS), tzdata (beat's zones), publicsuffix (the extractor's newest list
# of registrable domains), curl (the health checks).
FROM debian:12 AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends \
      libcpp-httplib0.11 libcurl4 libdate-tz3 libfmt9 libidn2-0 libjemalloc2 libpcre2-8-0 \
      libpq5 libpqxx-6.4 libprometheus-cpp-core1.0 libpsl5 librabbitmq4 libspdlog1.10 libssl3 \
      libtomlplusplus3 libuuid1 libuv1 libxml2 \
      ca-certificates tzdata publicsuffix curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin celeriac
COPY --from=build /src/build/bin/orchestrator /src/build/bin/extractor /src/build/bin/demo-site \
     /usr/local/bin/
COPY deploy/healthcheck /usr/local/bin/celeriac-healthcheck
USER celeriac
ENTRYPOINT ["orchestrator"]
