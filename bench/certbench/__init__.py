"""certgate's benchmark harness: certgate against nginx doing the same job (see bench/README.md)."""
