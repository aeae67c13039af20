# syntax=docker/dockerfile:1
# The pulih binary in a small image: every command (`pulih ingest`,
# `aggregate`, `rollup`, `alerts`, `ui`, `migrate`, ...) from one image, all
# configuration from the environment (PULIH_<SECTION>__<KEY>, see
# crates/pulih/src/default.toml). Migrations, reference data, the calendar
# and the page are compiled in.
#
#   docker build -t pulih .
#   docker run --rm pulih check-config aggregate
#
# deploy/compose/ and deploy/k8s/ run it.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys (cmake is not needed).
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY schemas schemas
COPY deploy/scenarios deploy/scenarios
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p pulih \
    && cp target/release/pulih /usr/local/bin/pulih

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/pulih /usr/local/bin/pulih
# No shell needed at run time; an unprivileged user, numeric so that
# Kubernetes' runAsNonRoot can check it.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/pulih", "--log-format", "json"]
CMD ["--help"]
