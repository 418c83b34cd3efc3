"""The HTTP/1.1 engine: connections, forwarding, local answers, flow control, wire helpers, upstream pool, tunnels."""
