"""Operator endpoints and commands: the admin API and the sessions command."""
