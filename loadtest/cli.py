"""`tritonforge loadtest` (placeholder until the load tester lands)."""

from __future__ import annotations

import click

from tritonforge.errors import UserError


@click.group("loadtest", invoke_without_command=True)
@click.pass_context
def loadtest_group(ctx: click.Context) -> None:
    """Load-test a Triton deployment with Locust."""
    if ctx.invoked_subcommand is None:
        raise UserError("loadtest is not implemented yet")
