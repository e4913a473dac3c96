"""The `attnserve` command: each subcommand imports its package lazily."""
