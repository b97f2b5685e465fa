"""Shadows qh3 for one subprocess of test_daemon_flags.py: importing it fails like a broken
native build, so ``auto`` must fall back to aioquic."""

raise ImportError("qh3 made unimportable for this test")
