"""Build svcreg's container image here, with no Docker engine and no registry, and load it into
the local node.

buildah (daemonless; vfs storage under ``~/.cache/svcreg/images``) builds the project's own
Dockerfile. Its base is a build argument (``BASE_IMAGE``, default ``python:3.12-slim``, which
users with Docker keep); where that image cannot be pulled, as on a machine that reaches
Debian's packages but no image registry, the base is made from Debian's packages: debootstrap's
minbase of bookworm with python3, its venv module and CA certificates, and a virtualenv at
``/opt/python`` first on PATH (so the Dockerfile's ``pip`` installs into it, not into the
system's externally managed Python). The base trusts the host's extra CA certificates, as the
host does. The image is exported as an OCI archive and imported into the node's containerd,
where pods find it with ``imagePullPolicy: Never``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from svcreg.devtools.controlplane import build, node, progress

IMAGE = "localhost/svcreg/svcreg:dev"
DEBIAN_BASE = "localhost/svcreg/debian-python:bookworm-1"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")


class ImageError(node.NodeError):
    """The image could not be built; the message carries the tool's own words."""


def storage_root() -> Path:
    return build.cache_root() / "images"


def buildah(*args: str, cwd: Path | None = None) -> str:
    """buildah on svcreg's own image store, kept across clusters (a base is built once)."""
    return node.buildah(storage_root(), *args, cwd=cwd, timeout=1800)


def has_image(name: str) -> bool:
    try:
        buildah("inspect", "--type", "image", name)
    except node.NodeError:
        return False
    return True


def build_debian_base(report: progress.Reporter = progress.stderr_reporter) -> str:
    """The base made from Debian's packages (once; kept in the image store)."""
    if has_image(DEBIAN_BASE):
        return DEBIAN_BASE
    if shutil.which("debootstrap") is None:
        raise ImageError("building the Debian base needs debootstrap (bash scripts/install.sh installs it)")
    report(f"building {DEBIAN_BASE} from Debian's packages (debootstrap; a few minutes, once)")
    with tempfile.TemporaryDirectory(prefix="svcreg-base-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        node.run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            "bookworm",
            str(rootfs),
            DEBIAN_MIRROR,
            timeout=1800,
        )
        node.run("chroot", str(rootfs), "python3", "-m", "venv", "/opt/python")
        # The host's own extra CA certificates (a TLS-intercepting egress proxy, a company CA)
        # are trusted in the base too, so the Dockerfile's pip reaches PyPI as the host's does.
        extra = Path("/usr/local/share/ca-certificates")
        if extra.is_dir():
            for certificate in extra.glob("*.crt"):
                shutil.copy(certificate, rootfs / "usr/local/share/ca-certificates" / certificate.name)
            node.run("chroot", str(rootfs), "update-ca-certificates")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        archive = Path(scratch) / "rootfs.tar"
        node.run("tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(archive), ".")
        container = buildah("from", "scratch")
        try:
            buildah("add", container, str(archive), "/")
            buildah(
                "config",
                "--env",
                "PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--env",
                "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
                "--env",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "--cmd",
                "python3",
                container,
            )
            buildah("commit", "--rm", container, DEBIAN_BASE)
        except node.NodeError:
            buildah("rm", container)
            raise
    return DEBIAN_BASE


MAX_CACHED_LAYERS = 12  # untagged images (build steps) kept for reuse: about three builds' worth


def _bound_cache() -> None:
    """Keep the layer cache bounded: past MAX_CACHED_LAYERS untagged images (each a full copy
    with vfs storage), drop them all; the next build is then a cold one."""
    dangling = buildah("images", "--quiet", "--filter", "dangling=true").split()
    if len(dangling) > MAX_CACHED_LAYERS:
        buildah("rmi", "--prune")


def build_image(
    source: Path,
    *,
    base: str | None = None,
    report: progress.Reporter = progress.stderr_reporter,
) -> Path:
    """Build ``IMAGE`` from ``source``'s Dockerfile and export it; return the OCI archive.
    ``base``: the base image (default: the Debian-made one, built if missing)."""
    base = base or build_debian_base(report)
    _bound_cache()
    report(f"building {IMAGE} from {source / 'Dockerfile'} on {base} (buildah)")
    buildah(
        "bud",
        "--layers",  # a rebuild with unchanged sources reuses the cached steps
        "--isolation",
        "chroot",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--pull=never" if base.startswith("localhost/") else "--pull=missing",
        "-t",
        IMAGE,
        "-f",
        "Dockerfile",
        ".",
        cwd=source,
    )
    archive = storage_root() / "svcreg-dev.tar"
    archive.unlink(missing_ok=True)
    buildah("push", IMAGE, f"oci-archive:{archive}:{IMAGE}")
    report(f"built {IMAGE}; OCI archive {archive}")
    return archive
