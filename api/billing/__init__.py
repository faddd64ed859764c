"""The billing feed for BOSS (API key, scope ``billing``)."""
