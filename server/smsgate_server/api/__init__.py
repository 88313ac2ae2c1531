"""gRPC servicers and the request guard: protobuf <-> domain, nothing else."""
