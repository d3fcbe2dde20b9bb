"""callward.media."""
