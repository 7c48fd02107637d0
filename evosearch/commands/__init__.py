"""CLI command groups: each module registers its subcommands and returns data to the output sink."""
