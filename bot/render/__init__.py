"""Renderers: pure functions from a Report to Block Kit, the terminal or JSON."""
