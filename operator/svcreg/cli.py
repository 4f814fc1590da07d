"""The ``svcreg`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _cluster_command(args: argparse.Namespace) -> int:
    from svcreg.devtools.controlplane import build, cluster, node  # noqa: PLC0415 - the dev extra

    directory = Path(args.dir) if args.dir else None
    try:
        if args.action == "build":
            binaries = build.ensure_binaries()
            if args.node:
                build.ensure_node_binaries()
            if args.promtool:
                build.ensure_promtool()
            print(binaries.path_dir)
            return 0
        if args.action == "up":
            print(cluster.up(directory, node=args.node).exports(), end="")
            return 0
        if args.action == "down":
            stopped = cluster.down(directory)
            print("stopped" if stopped else "not running", file=sys.stderr)
            return 0
        running = cluster.status(directory)
        if running is None:
            print('not running (start it with: eval "$(svcreg cluster up)")', file=sys.stderr)
            return 1
        if args.action == "env":
            print(running.exports(), end="")
            return 0
        print(f"{'server:':<25}{running.server}")
        print(f"{'kubeconfig:':<25}{running.kubeconfig}")
        print(f"{'etcd:':<25}{running.etcd_url}")
        print(f"{'tools:':<25}{running.path_dir}")
        if running.node:
            ready = "Ready" if cluster.node_ready(running) else "not Ready"
            print(f"{'node:':<25}{node.NODE_NAME} at {node.NODE_IP}, {ready}")
        for record in running.processes:
            print(f"{record.name + ':':<25}pid {record.pid}, log {record.log}")
        return 0
    except (build.BuildError, cluster.ClusterError, node.NodeError) as error:
        print(f"svcreg: {error}", file=sys.stderr)
        return 1


def _image_command(args: argparse.Namespace) -> int:
    from svcreg.devtools import image  # noqa: PLC0415 - the dev extra
    from svcreg.devtools.controlplane import cluster, node  # noqa: PLC0415 - the dev extra

    source = Path(args.context) if args.context else Path(__file__).resolve().parents[2]
    if not (source / "Dockerfile").exists():
        print(f"svcreg: no Dockerfile in {source} (pass --context)", file=sys.stderr)
        return 1
    try:
        archive = image.build_image(source, base=args.base)
        running = cluster.status(Path(args.dir) if args.dir else None)
        if running is not None and running.node:
            node.import_image(node.Layout(Path(running.directory) / "node"), archive)
            print(f"svcreg: {image.IMAGE} loaded into the node's containerd", file=sys.stderr)
        else:
            print(
                "svcreg: no node running (svcreg cluster up --node); the image is only built", file=sys.stderr
            )
    except (image.ImageError, node.NodeError) as error:
        print(f"svcreg: {error}", file=sys.stderr)
        return 1
    print(image.IMAGE)
    return 0


def _client_errors_without_traceback(record: logging.LogRecord) -> bool:
    """aiohttp logs a malformed request (a client's fault, already answered 400) as an error with
    a traceback; keep one line of it as a warning."""
    from aiohttp.http_exceptions import BadHttpMessage  # noqa: PLC0415 - the operator extra

    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, BadHttpMessage):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args, record.exc_info, record.exc_text = (
            f"bad request refused: {error}",
            (),
            None,
            None,
        )
    return True


def _run_command(args: argparse.Namespace) -> int:
    import pydantic  # noqa: PLC0415

    from svcreg import main as runner  # noqa: PLC0415 - Kopf is imported only for the commands that run it
    from svcreg import settings  # noqa: PLC0415

    try:
        run_settings = settings.from_args(args)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "settings"
        print(f"svcreg run: {flag}: {first['msg']}", file=sys.stderr)
        return 2
    from svcreg.telemetry import logformat  # noqa: PLC0415

    logformat.configure(logging.DEBUG if args.verbose else run_settings.log_level, run_settings.log_format)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_client_errors_without_traceback)
    asyncio.run(runner.run(run_settings))
    return 0


def _dev_command(args: argparse.Namespace) -> int:
    from svcreg.devtools import dev, dev_node  # noqa: PLC0415

    if args.node:
        return dev_node.run(Path(args.dir) if args.dir else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_client_errors_without_traceback)
    return dev.run(args.port, Path(args.dir) if args.dir else None)


def _discover_command(args: argparse.Namespace) -> int:
    from svcreg.client import discover  # noqa: PLC0415

    return discover.run(args)


def _ui_command(args: argparse.Namespace) -> int:
    from svcreg.devtools import ui  # noqa: PLC0415

    return ui.run(args)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="svcreg", description="A Kubernetes-native service registry.")
    commands = root.add_subparsers(dest="command", required=True)

    cluster_parser = commands.add_parser(
        "cluster",
        help="a local kube-apiserver and etcd on loopback, built from Go modules",
        description="Run a local control plane in the background. "
        'Use: eval "$(svcreg cluster up)" to start it and point kubectl at it.',
    )
    cluster_parser.add_argument(
        "action",
        choices=["up", "down", "status", "env", "build"],
        help="up: start (idempotent) and print exports; down: stop and remove state; "
        "status: what runs; env: print exports of a running one; build: only build the binaries",
    )
    cluster_parser.add_argument(
        "--dir", help="state directory (default: $SVCREG_CLUSTER_DIR or ~/.cache/svcreg/cluster)"
    )
    cluster_parser.add_argument(
        "--node",
        action="store_true",
        help="with up: also a real node (kubelet, containerd, runc, CNI, kube-proxy, CoreDNS, "
        "scheduler, controller-manager) that runs pods; needs root and bash scripts/install.sh",
    )
    cluster_parser.add_argument(
        "--promtool",
        action="store_true",
        help="with build: also promtool (Prometheus), which tests the chart's alerting rules",
    )
    cluster_parser.set_defaults(handler=_cluster_command)

    image_parser = commands.add_parser(
        "image",
        help="build svcreg's image with buildah (no Docker engine, no registry) and load it into the node",
        description="Build the Dockerfile with buildah. Without --base the base is made from "
        "Debian's packages (debootstrap), for machines that reach no image registry. When a node "
        "runs (svcreg cluster up --node), the image is imported into its containerd.",
    )
    image_parser.add_argument("action", choices=["build"])
    image_parser.add_argument(
        "--base", help="base image instead of the Debian-made one, e.g. python:3.12-slim"
    )
    image_parser.add_argument("--context", help="directory holding the Dockerfile (default: this checkout)")
    image_parser.add_argument("--dir", help="state directory of the cluster whose node gets the image")
    image_parser.set_defaults(handler=_image_command)

    run_parser = commands.add_parser(
        "run",
        help="the operator and the HTTP endpoint, against the current kubeconfig or in-cluster config",
    )
    try:
        from svcreg import settings  # noqa: PLC0415 - the operator extra

        settings.add_arguments(run_parser)
    except ImportError:
        run_parser.description = "needs the operator extra: pip install 'svcreg[operator]'"
    run_parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    run_parser.set_defaults(handler=_run_command)

    dev_parser = commands.add_parser(
        "dev",
        help="try svcreg on this machine: control plane, CRD, examples with demo targets, operator",
        description="Start the local control plane (if none runs), install the CRD, apply the "
        "examples pointed at demo targets, run the operator and discovery in the foreground, and "
        "print a ready-to-paste curl. Ctrl-C stops everything it started.",
    )
    dev_parser.add_argument("--port", type=int, default=8080, help="discovery port (default 8080)")
    dev_parser.add_argument("--dir", help="control plane state directory (as for svcreg cluster)")
    dev_parser.add_argument(
        "--node",
        action="store_true",
        help="run it in the cluster instead: the control plane with its node, the image built here, "
        "the Helm chart, the demo targets as pods behind Services (needs root; scripts/install.sh)",
    )
    dev_parser.set_defaults(handler=_dev_command)

    discover_parser = commands.add_parser(
        "discover",
        help="query discovery from the shell (SVCREG_URL, SVCREG_TOKEN)",
        description="Query the discovery endpoint with the Python client: a table by default.",
    )
    from svcreg.client import discover  # noqa: PLC0415 - light: the client and httpx only

    discover.add_arguments(discover_parser)
    discover_parser.set_defaults(handler=_discover_command)

    explain_parser = commands.add_parser(
        "explain",
        help="why each instance is or is not in a query's answer (SVCREG_URL, SVCREG_TOKEN)",
        description="Ask /v1/explain with the same filters as svcreg discover: every candidate, "
        "whether it is in the answer, and every reason it is not.",
    )
    discover.add_arguments(explain_parser)
    explain_parser.set_defaults(handler=discover.run_explain)

    ui_parser = commands.add_parser(
        "ui",
        help="open the dashboard signed in with a short-lived token (never put in a URL)",
        description="Serve discovery's dashboard on a loopback port that adds a token to its "
        "requests, and open the browser at a one-time sign-in link. The token is the one given, "
        "or one requested for --service-account, or the kubeconfig user's (made short-lived where "
        "the cluster allows it).",
    )
    ui_parser.set_defaults(handler=_ui_command)
    try:
        from svcreg.devtools import ui  # noqa: PLC0415 - the kube extra

        ui.add_arguments(ui_parser)
    except ImportError:
        ui_parser.description = "needs the kube extra: pip install 'svcreg[kube]'"
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
