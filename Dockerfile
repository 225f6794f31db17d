# voxrelay: build a release binary, then run it on a slim Debian with only CA certificates.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p voxrelay-cli

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/voxrelay /usr/local/bin/voxrelay
COPY config ./config
COPY prompts ./prompts
ENV VOXRELAY_SERVER_LISTEN=0.0.0.0:8080 \
    VOXRELAY_DATABASE_URL=sqlite:///data/voxrelay.db?mode=rwc
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["voxrelay"]
CMD ["serve"]
