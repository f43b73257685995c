"""Adapters: the only modules that talk to other programs and services (Docker, AWS, registries)."""
