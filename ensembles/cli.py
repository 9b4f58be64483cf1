"""`tritonforge router ...` (placeholder until the router lands)."""

from __future__ import annotations

import click


@click.group("router")
def router_group() -> None:
    """Routing policy tools."""
