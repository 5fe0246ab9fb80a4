"""Pure domain model: identifiers, record kinds, status life cycle. No I/O, no protobuf."""
