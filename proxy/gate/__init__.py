"""The per-request decision and the words and rules it answers with."""
