# syntax=docker/dockerfile:1
# llm-router (github.com/akiojin/llm-router) as a slim image, built from source:
# the project publishes binaries but no runtime image (its own Dockerfile is a
# development environment). Pinned to the commit the node's router contract was
# observed against (shared/router-contract.md); override ROUTER_REF to move.
#
#   docker build -f deploy/router.Dockerfile -t llm-router:54332b8 deploy
ARG BUILDER=docker.io/library/rust:1-bookworm
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER} AS build
ARG ROUTER_REF=54332b8c3ce7ee7e0dee22c0f49b42a5ffb10f6a
RUN git clone https://github.com/akiojin/llm-router.git /src \
 && cd /src && git checkout --detach "$ROUTER_REF" \
 && cargo build --release --locked -p llm-router \
 && install -D target/release/llm-router /out/llm-router

FROM ${BASE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --create-home --home-dir /var/lib/llm-router llm-router
COPY --from=build /out/llm-router /usr/bin/llm-router
USER llm-router
WORKDIR /var/lib/llm-router
ENV HOME=/var/lib/llm-router LLM_ROUTER_HOST=0.0.0.0 LLM_ROUTER_PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/bin/llm-router"]
