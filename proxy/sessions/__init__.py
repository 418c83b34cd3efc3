"""Trusted sessions: the manager and certgate's presence endpoints."""
