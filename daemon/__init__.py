"""voxpipe daemon: the supervisor and the command line with its user commands."""

from voxpipe import __version__

__all__ = ["__version__"]
