"""Alerts: a stall reaches a person without anyone looking (see alerting.check)."""
