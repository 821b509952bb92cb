# Celeriac binaries on Debian 12, built with the same ./dev script the tests use.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates procps \
 && ./dev build

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates libuv1 libpqxx-6.4 librabbitmq4 librdkafka1 libcurl4 libidn2-0 libxml2 \
      libspdlog1.10 libfmt9 libtomlplusplus3 libdate-tz3 libcpp-httplib0.11 \
      libprometheus-cpp-core1.0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/orchestrator /src/build/bin/extractor /usr/local/bin/
ENTRYPOINT ["orchestrator"]
