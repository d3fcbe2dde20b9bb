"""callward.rtp."""
