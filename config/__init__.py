"""Settings, host inventory and approval policy."""
