"""`tritonforge plan` and `tritonforge build` (placeholders until the builder lands)."""

from __future__ import annotations

import click

from tritonforge.errors import UserError


@click.command("plan")
@click.argument("spec", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_command(spec: str, as_json: bool) -> None:
    """Capacity plan for every tier of SPEC."""
    raise UserError("plan is not implemented yet")


@click.command("build")
@click.argument("spec", type=click.Path())
@click.option("--dry-run", is_flag=True)
def build_command(spec: str, dry_run: bool) -> None:
    """Quantize and build engines for SPEC."""
    raise UserError("build is not implemented yet")
