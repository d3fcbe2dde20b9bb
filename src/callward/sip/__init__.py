"""callward.sip."""
