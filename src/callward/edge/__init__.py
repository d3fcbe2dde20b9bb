"""callward.edge."""
