# The pimesh (controller) image for users with Docker BuildKit (images/README.md);
# CI builds the same image with images/build.sh (buildah), not with this file.
# From the repository root, after the three `cargo build`s of the README:
#   docker buildx build -f images/pimesh.Dockerfile \
#     --platform linux/arm64,linux/arm/v7,linux/amd64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) \
#     -t ghcr.io/pimesh/pimesh:0.1.0 .
# TARGETARCH (arm64, arm, amd64) picks the stage with that target's binary;
# declared here for buildah/podman, which do not predefine it for FROM.
ARG TARGETARCH
FROM scratch AS bin-arm64
COPY --chown=0:0 --chmod=0755 target/aarch64-unknown-linux-musl/release/pimesh /pimesh
FROM scratch AS bin-arm
COPY --chown=0:0 --chmod=0755 target/armv7-unknown-linux-musleabihf/release/pimesh /pimesh
FROM scratch AS bin-amd64
COPY --chown=0:0 --chmod=0755 target/x86_64-unknown-linux-musl/release/pimesh /pimesh

FROM bin-${TARGETARCH}
ARG VERSION
ARG REVISION
ARG CREATED
LABEL org.opencontainers.image.title=pimesh \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.source=https://github.com/pimesh/pimesh \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.revision=${REVISION} \
      org.opencontainers.image.created=${CREATED}
# distroless's "nonroot" uid (images/build.sh uses the same).
USER 65532:65532
ENTRYPOINT ["/pimesh"]
