"""The installed package's version, in a leaf module so that stages need not import the package root."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kia")
except PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.0.0+local"
