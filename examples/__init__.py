"""Minimal apps wired to monitor-worker, one per framework (see README.md, "Web frameworks")."""
