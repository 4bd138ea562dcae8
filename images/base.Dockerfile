# Offline base images (make IMAGE_SOURCE=offline, the default): the layout of distroless
# static-debian12 nonroot and debug-nonroot, assembled FROM scratch from the trees that
# images/rootfs.sh writes (build context: that output directory). No RUN steps, so building
# needs no registry, no network and no container runtime.

FROM scratch AS static-nonroot
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot

# Debug: the same plus a static busybox at /busybox (/busybox/sh), on PATH.
FROM static-nonroot AS debug-nonroot
ADD busybox.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/busybox
ENTRYPOINT ["/busybox/sh"]
