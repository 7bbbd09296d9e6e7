# syntax=docker/dockerfile:1
# llm-node, CPU image: multi-stage, portable build (runs on any x86-64, picks
# AVX2/AVX-512 at run time), slim non-root runtime with a health check.
#
#   docker build -t llm-node .
#   docker run -p 11435:11435 -v llm-models:/var/lib/llm-node llm-node
#
# The build stage runs the same script as the packages (scripts/build-release.sh);
# Dockerfile.cuda differs only in images and flavour. BUILDER/BASE are arguments so
# a machine without a registry can use locally made images (tests/packaging/image.sh);
# a build stage that already holds /out (such a local stand-in) skips the build.
ARG BUILDER=docker.io/library/rust:1-bookworm
ARG BASE=docker.io/library/debian:bookworm-slim
ARG FLAVOR=portable

FROM ${BUILDER} AS build
ARG FLAVOR
# .git is not in the context (.dockerignore): pass --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD).
ARG GIT_SHA=unknown
ENV LLM_NODE_GIT_SHA=${GIT_SHA}
WORKDIR /src
COPY . .
RUN if [ ! -d /out ]; then \
      apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake clang libclang-dev git \
      && LLM_NODE_CACHE=/tmp/cache CARGO_TARGET_DIR=/tmp/target \
         scripts/build-release.sh --flavor "$FLAVOR" --no-packages \
      && mkdir /out && cp -a dist/llm-node-*-"$FLAVOR"/. /out/ ; \
    fi

FROM ${BASE} AS runtime
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libgomp1 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 llm-node \
 && useradd --system --uid 10001 --gid llm-node --home-dir /var/lib/llm-node --shell /usr/sbin/nologin llm-node \
 && install -d -o llm-node -g llm-node /var/lib/llm-node /var/lib/llm-node/models
COPY --from=build /out/bin/ /usr/bin/
COPY --from=build /out/lib/llm-node/ /usr/lib/llm-node/
COPY --from=build /out/share/man/ /usr/share/man/
USER llm-node
ENV LLM_NODE_CACHE=/var/lib/llm-node \
    LLM_NODE_STORE_DIR=/var/lib/llm-node/store \
    LLM_NODE_MODELS_DIR=/var/lib/llm-node/models \
    LLM_NODE_BIND_ADDRESS=0.0.0.0 \
    LLM_NODE_PORT=11435 \
    RUST_LOG=info
VOLUME ["/var/lib/llm-node"]
EXPOSE 11435
# Drain on stop: docker stop sends SIGTERM to PID 1 (llm-node itself, no shell);
# give it more than drain + shutdown timeouts: docker stop -t 60.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${LLM_NODE_PORT}/health/ready" >/dev/null || exit 1
ENTRYPOINT ["/usr/bin/llm-node"]
