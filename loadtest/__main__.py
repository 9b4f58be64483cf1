"""`python -m tritonforge.loadtest ...`: the `tritonforge loadtest` command on its own."""

from __future__ import annotations

import sys

import click

from tritonforge.errors import UserError
from tritonforge.loadtest.cli import loadtest_group


def main() -> None:
    try:
        loadtest_group.main(prog_name="tritonforge loadtest", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
