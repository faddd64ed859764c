"""Use cases. The only code that commits; each takes an explicit ``actor`` and checks its rights itself."""
