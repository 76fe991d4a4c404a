"""Monitoring: payload and feedback records, quality and drift evaluations."""
