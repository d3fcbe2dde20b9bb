"""callward.privacy."""
