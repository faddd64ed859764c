"""SMS: templates, segment counting, the outbox relay, the Twilio adapter, the message triggers."""
