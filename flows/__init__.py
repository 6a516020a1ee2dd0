"""Orchestration only: what runs after what, waits, deadlines, human decisions."""
