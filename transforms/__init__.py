"""Pure pipeline logic: events, parsing, chunking, planning and embedding (no store clients)."""
