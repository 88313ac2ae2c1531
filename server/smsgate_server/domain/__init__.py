"""Pure domain logic: no I/O, no Redis, no gRPC."""
