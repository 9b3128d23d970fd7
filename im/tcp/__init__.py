"""The long-connection transport: sockets, framing, per-connection greenlets, the router."""
