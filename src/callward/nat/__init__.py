"""callward.nat."""
