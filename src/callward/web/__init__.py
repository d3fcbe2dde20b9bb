"""callward.web."""
