"""Subcommands of the `smt` command line (see smt.cli)."""
