"""Use cases: sending, verification and watching. They validate with the
domain, call the stores and raise domain errors; they know no protobuf."""
