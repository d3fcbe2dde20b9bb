"""callward.ua."""
