"""kia: place research papers in a survey's taxonomy, with verbatim evidence, stored in DuckDB."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kia")
except PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.0.0+local"
