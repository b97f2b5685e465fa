"""The sans-I/O protocol: messages, codec, framing, close codes."""
