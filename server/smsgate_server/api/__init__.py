"""gRPC servicers and interceptors: protobuf <-> domain, nothing else."""
