"""callward.relay."""
