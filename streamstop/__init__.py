"""streamstop: cancel outgoing messages at scale from Kafka events."""

__version__ = "0.1.0"
