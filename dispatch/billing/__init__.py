"""The billing feed for BOSS: events, their dense numbering, the push relay and the settlement file."""
