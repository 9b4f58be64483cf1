"""`python -m tritonforge` runs the CLI."""

from tritonforge.cli import main

main()
