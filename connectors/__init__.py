"""Everything that talks to an external system, one module per system (the design card's `io/`; a
top-level package named `io` would shadow Python's standard library)."""
