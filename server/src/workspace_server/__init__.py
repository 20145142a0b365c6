"""Workspace server: sandbox service, local runtime and in-sandbox agent."""

__version__ = "0.1.0"
