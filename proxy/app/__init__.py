"""The process: service wiring, the command line, twistd glue, start checks, the demo."""
