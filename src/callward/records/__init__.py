"""callward.records."""
