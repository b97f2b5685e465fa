"""connet live dashboard (Textual)."""
