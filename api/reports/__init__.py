"""KPI reports for managers."""
