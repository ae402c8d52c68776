# The mallbots binary. Built with the Debian toolchain image; npm fetches the
# playground's pinned files during the build.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mallbots-gateway --bin mallbots

FROM debian:bookworm-slim
COPY --from=build /src/target/release/mallbots /usr/local/bin/mallbots
EXPOSE 8080
CMD ["mallbots"]
