"""Run reports: metrics.json, report.md and plots."""
