"""Complaints for dispatchers and managers."""
