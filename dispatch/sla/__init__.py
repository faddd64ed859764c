"""SLA clocks: pure due-time arithmetic (policy), clock starts and stops per transition (clocks), the tick."""
