"""Default connet plugin (being written)."""
