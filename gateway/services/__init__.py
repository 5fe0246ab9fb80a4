"""gRPC servicers: thin translation between protobuf and the domain, nothing else."""
