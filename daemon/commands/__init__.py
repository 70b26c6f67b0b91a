"""The user commands behind `voxpipe say|submit|status|split|voice|keys`, one module each.

Each module has `configure_parser(parser)` and `run(args) -> exit code`; the command line
imports only the one it runs, so start-up stays fast."""
