"""beam-vector-sync: keep vector stores exactly in sync with changing documents (options, graph, entry)."""
