"""uftdata: prepare and mix Unified Fine-Tuning data (see README.md and docs/design.md)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("uft")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
