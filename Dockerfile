# liteship container image: one static-ish binary on a distroless base.
#
# Build:  docker build -t liteship:0.1.0 .
# Size:   the binary is ~12.5 MB (release profile in Cargo.toml, stripped); distroless/cc
#         adds ~23 MB (glibc, libgcc, CA certificates), so the image is about 36 MB.
#         Litestream's binary alone is about 39 MB.

# Build stage: the same release build .ci/run performs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin liteship

# Runtime: no shell, no package manager; CA certificates for TLS endpoints; runs as the
# unprivileged "nonroot" user (uid 65532). Give it write access to the database directory
# (Nomad's /alloc/data is world-writable), or use `restore -owner` for the app's user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/liteship /usr/local/bin/liteship
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/liteship"]
CMD ["--help"]
