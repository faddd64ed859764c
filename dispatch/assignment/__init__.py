"""Engineer assignment: the hard rules (pure) and, later, scoring and auto-dispatch."""
