"""Command-line diagnostics for humans: force_clear_locks.py, health_report.py."""
