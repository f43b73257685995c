"""The smimg in-image entrypoint. Standard library only; imports nothing from the host toolkit."""

__version__ = "0.1.0"
