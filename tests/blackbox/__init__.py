"""Black-box tests: the real ``certgate`` process on loopback; their helpers are in :mod:`tests.harness`."""
