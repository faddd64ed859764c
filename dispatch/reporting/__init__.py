"""KPI rollups (incremental, from the events) and the reports read from them."""
