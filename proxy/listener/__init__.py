"""The TLS listener: contexts, in-handshake verification, the connection identity, reloads, OCSP, directory lookups."""
