"""callward.usage."""
