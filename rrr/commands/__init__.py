"""One module per `rrr` subcommand: `add_arguments(parser)` and `run(args, cfg) -> int`.

Modules import heavy dependencies (vLLM, Ray, torch) inside `run`, so `--help` stays instant.
"""
