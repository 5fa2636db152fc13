"""Slack listeners: each a few lines that call into bot/."""
