# Switchyard: both binaries in one image.
#   docker build -t switchyard:latest .        (or: docker compose up --build)
# Run the control plane with `switchyard-control-plane`, a replica with `switchyard-data-plane`
# (the default command); see docker-compose.yml. Without a registry, scripts/offline-images.sh
# makes the same image from a debootstrapped base and host-built binaries (docker/Dockerfile.offline).
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, in their own layer: fetched again only when a manifest or the lock changes.
# (Only a cache: if the stub workspace cannot be fetched, the full build below fetches anyway.)
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/
COPY control-plane/Cargo.toml control-plane/
COPY data-plane/Cargo.toml data-plane/
COPY integration-tests/Cargo.toml integration-tests/
RUN for crate in shared control-plane data-plane integration-tests; do \
        mkdir -p "$crate/src" && touch "$crate/src/lib.rs" && echo 'fn main() {}' > "$crate/src/main.rs"; \
    done \
    && { cargo fetch --locked || echo "dependency pre-fetch skipped"; } \
    && rm -rf shared control-plane data-plane integration-tests
COPY . .
RUN cargo build --release --locked --bins \
    && install -d /out \
    && install -m 0755 target/release/switchyard-control-plane target/release/switchyard-data-plane target/release/switchyard /out/

FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid switchyard --home-dir /var/lib/switchyard \
        --shell /usr/sbin/nologin switchyard \
    && install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard

COPY --from=build /out/switchyard-control-plane /out/switchyard-data-plane /out/switchyard /usr/local/bin/
# slim has no curl/wget: the health check speaks HTTP over bash's /dev/tcp.
COPY docker/healthcheck.sh /usr/local/bin/switchyard-healthcheck
RUN chmod 0755 /usr/local/bin/switchyard-healthcheck

# Inside a container everything listens on all interfaces; flags override these.
ENV SWITCHYARD_API_LISTEN=0.0.0.0:8080 \
    SWITCHYARD_GRPC_LISTEN=0.0.0.0:18000 \
    SWITCHYARD_STATE_FILE=/var/lib/switchyard/state.json \
    SWITCHYARD_LISTEN=0.0.0.0:8000 \
    SWITCHYARD_ADMIN_LISTEN=0.0.0.0:9901 \
    SWITCHYARD_CACHE_FILE=/var/lib/switchyard/dataplane-cache.json

USER switchyard:switchyard
WORKDIR /var/lib/switchyard
EXPOSE 8000 9901 8080 18000
# Checks the control plane's /healthz or the data plane's /readyz, whichever runs as PID 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["switchyard-healthcheck"]
CMD ["switchyard-data-plane"]
