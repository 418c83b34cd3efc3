"""What certgate tells operators: metrics, audit, access and operational logs."""
