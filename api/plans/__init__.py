"""Day plans: the planner's proposals for a day and some districts, accepted or discarded by dispatchers."""
