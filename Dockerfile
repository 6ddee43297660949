# The runner image (`make image`): the binary built with the toolchain rust-toolchain.toml pins,
# run on Debian bookworm with CA certificates, as a non-root user, `runner` as the entrypoint.
#
# The image carries jobs/, sql/, schemas/, scheduler/, runner.toml and the model declaration:
# what runs is reviewed and versioned with the code that runs it, and a task started from a tag
# always runs the SQL of that tag. Where, and against which AWS resources, comes from the
# environment (`RUNNER__WAREHOUSE`, `RUNNER__SOURCES__<STREAM>__URL`, `RUNNER__CATALOG__*`; the
# exported task definition sets them). To try other jobs without a new image, mount a folder over
# /app/jobs or /app/sql, or point RUNNER_CONFIG at a mounted runner.toml.
#
# Two ways to build it (docker or podman alike):
#   docker build -t runner .                          the binary built in the `build` stage
#   make image-runtime BIN=target/release/runner      an already built binary (`--target prebuilt`,
#                                                     the binary staged as .image/runner)
# The base images are build arguments, so the same file builds from locally made bases where no
# registry is reachable (`--build-arg RUNTIME_IMAGE=localhost/bookworm-base`, a root file system
# made by `mmdebstrap --variant=minbase --include=ca-certificates bookworm`).
# Keep WORKDIR, USER and ENTRYPOINT in step with the exported task definition
# (`tests/image.rs` checks both).

ARG RUST_VERSION=1.95.0
ARG BUILD_IMAGE=rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
# aws-lc-sys (rustls' crypto) may build with CMake.
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target folder between builds of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin runner && cp target/release/runner /usr/local/bin/runner

# What both final stages share: CA certificates (installed only when the base lacks them), the
# non-root user, the job definitions.
FROM ${RUNTIME_IMAGE} AS runtime-base
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin runner
WORKDIR /app
COPY runner.toml ./
COPY jobs/ jobs/
COPY sql/ sql/
COPY schemas/ schemas/
COPY scheduler/ scheduler/
COPY data/model/ data/model/
# A local warehouse for trying the image without S3 (`-v $PWD/data/drops:/app/data/drops`).
RUN mkdir -p /app/warehouse && chown runner:runner /app/warehouse
USER runner
ENTRYPOINT ["runner"]
CMD ["--help"]

# `--target prebuilt`: the binary from the build context (.image/runner), no Rust toolchain.
FROM runtime-base AS prebuilt
COPY .image/runner /usr/local/bin/runner

# The default: the binary built above.
FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/runner /usr/local/bin/runner
