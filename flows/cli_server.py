"""``sim2real server start|status|stop``: one local Prefect server that every command reuses."""

from __future__ import annotations

import typer

from sim2real.flows.cli import emit

server_app = typer.Typer(no_args_is_help=True, help="A local Prefect server shared by every command.")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON object as the last stdout line.")


@server_app.command("start")
def start(
    port: int = typer.Option(0, "--port", help="Loopback port (0: a free one)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Start the server in the background (state under PREFECT_HOME); print its UI URL."""
    from sim2real.flows import server

    state = server.start(port or None)
    verb = "started" if state["started"] else "already running"
    emit(state, as_json, f"Prefect server {verb}: UI {state['url']} (pid {state['pid']}, log {state['log']})")


@server_app.command("status")
def status(as_json: bool = JSON_OPT) -> None:
    """Whether the server runs and answers; exit 1 when it does not."""
    from sim2real.flows import server

    state = server.read_state()
    up = bool(state and server.healthy(state["url"]))
    result = {"running": up, **(state or {})}
    emit(
        result, as_json, f"Prefect server running: UI {state['url']}" if up and state else "no server running"
    )
    if not up:
        raise typer.Exit(1)


@server_app.command("stop")
def stop(as_json: bool = JSON_OPT) -> None:
    """Stop the server and every process of its group."""
    from sim2real.flows import server

    state = server.stop()
    emit({"stopped": state is not None}, as_json, "Prefect server stopped" if state else "no server running")


def register(app: typer.Typer) -> None:
    """Add the ``server`` command group to the CLI."""
    app.add_typer(server_app, name="server")
