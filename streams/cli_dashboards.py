"""``salespulse dashboards build`` and ``push``: the Grafana boards as code, written for
provisioning or uploaded to a running Grafana."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

dashboards_app = typer.Typer(
    help="Grafana dashboards as code: write them for provisioning, or push them to a Grafana.",
    no_args_is_help=True,
)
err = Console(stderr=True)
out = Console(soft_wrap=True)

DEFAULT_OUT = Path("grafana")


class PushError(Exception):
    """A push failed for a reason the user can act on (the message says what to do)."""


def write_build(directory: Path) -> list[Path]:
    """Write every dashboard and provisioning file under ``directory``; stale dashboard files of
    ours (``salespulse-*.json`` that the build no longer makes) are removed."""
    from streams.dashboards import build_files

    files = build_files()
    written = []
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    for stale in (directory / "dashboards").glob("salespulse-*.json"):
        if stale.relative_to(directory).as_posix() not in files:
            stale.unlink()
    return written


@dashboards_app.command("build")
def build(
    out_dir: Annotated[
        Path,
        typer.Option("--out", file_okay=False, help="Where to write dashboards/ and provisioning/."),
    ] = DEFAULT_OUT,
) -> None:
    """Write the dashboards' JSON and Grafana's provisioning files (data sources, dashboard
    provider) into grafana/ (or --out): what the compose stack's Grafana loads at start."""
    for path in write_build(out_dir):
        out.print(str(path), markup=False, highlight=False)


def push_dashboards(api: Any, documents: dict[str, dict[str, Any]], folder: str) -> list[str]:
    """Create ``folder`` if needed and upload every dashboard into it, overwriting. Returns the
    uids pushed. ``api`` is a ``grafana_client.GrafanaApi``."""
    from grafana_client.client import GrafanaClientError, GrafanaUnauthorizedError

    try:
        folders = api.folder.get_all_folders()
    except GrafanaUnauthorizedError as exc:
        raise PushError(
            "Grafana refused the token (401): use a service-account token with the Editor role "
            "(Administration > Users and access > Service accounts)"
        ) from exc
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise PushError(
                "the token may not read folders (403): give its service account the Editor role"
            ) from exc
        raise
    existing = next((f for f in folders if f.get("title") == folder), None)
    folder_uid = existing["uid"] if existing else api.folder.create_folder(folder)["uid"]
    pushed = []
    for uid, document in documents.items():
        try:
            api.dashboard.update_dashboard(
                {
                    "dashboard": document,
                    "folderUid": folder_uid,
                    "overwrite": True,
                    "message": "salespulse dashboards push",
                }
            )
        except GrafanaClientError as exc:
            if exc.status_code == 403:
                raise PushError(
                    f"the token may not save dashboards in folder {folder!r} (403): "
                    "give its service account the Editor role"
                ) from exc
            raise PushError(f"Grafana rejected dashboard {uid} ({exc.status_code}): {exc.message}") from exc
        pushed.append(uid)
    return pushed


def missing_datasources(api: Any, uids: list[str]) -> list[str]:
    """The data source uids the boards use that this Grafana does not have."""
    from grafana_client.client import GrafanaClientError

    missing = []
    for uid in uids:
        try:
            api.datasource.get_datasource_by_uid(uid)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            missing.append(uid)
    return missing


@dashboards_app.command("push")
def push(
    url: Annotated[str, typer.Option(help="Grafana's address, e.g. http://localhost:3000.")],
    token: Annotated[
        str,
        typer.Option(
            envvar="GRAFANA_TOKEN", help="Service-account token (Editor role); or set GRAFANA_TOKEN."
        ),
    ],
    folder: Annotated[
        str, typer.Option(help="Folder to put the boards in (created if missing).")
    ] = "salespulse",
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each request.")] = 10.0,
) -> None:
    """Upload every dashboard to a running Grafana through its HTTP API (overwriting the boards of
    the same uid). The boards expect data sources with uids salespulse-clickhouse and
    salespulse-prometheus, as grafana/provisioning/datasources creates them."""
    import niquests
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaException, GrafanaTimeoutError

    from streams.dashboards import CLICKHOUSE_UID, PROMETHEUS_UID, build_all

    if not url.startswith(("http://", "https://")):
        raise _fail(f"--url {url!r} is not an http:// or https:// address", 2)
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    try:
        pushed = push_dashboards(api, build_all(), folder)
        missing = missing_datasources(api, [CLICKHOUSE_UID, PROMETHEUS_UID])
    except PushError as exc:
        raise _fail(str(exc)) from None
    except (GrafanaTimeoutError, niquests.exceptions.Timeout):
        raise _fail(f"Grafana at {url} did not answer within {timeout:g} s") from None
    except niquests.exceptions.ConnectionError as exc:
        raise _fail(
            f"cannot reach Grafana at {url}: {exc.__class__.__name__}; is it running there?"
        ) from None
    except GrafanaException as exc:
        raise _fail(f"Grafana answered {exc.status_code}: {exc.message}") from None
    for uid in pushed:
        out.print(f"pushed {uid}", markup=False, highlight=False)
    if missing:
        err.print(
            f"[yellow]warning:[/] this Grafana has no data source with uid {', '.join(missing)}: the boards "
            "will show no data until one exists (see grafana/provisioning/datasources)"
        )


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


__all__ = ["build", "dashboards_app", "push", "push_dashboards", "write_build"]
