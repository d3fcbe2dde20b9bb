"""callward.sdp."""
