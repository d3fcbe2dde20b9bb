"""callward.quality."""
