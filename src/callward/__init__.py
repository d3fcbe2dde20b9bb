"""callward: a mobile-VoIP platform that treats data as a first-class concern.

Layers (imports only point down): faces (cli, web) > services (edge, ua, relay) >
data (quality, records, privacy, usage) > protocol cores (sip, sdp, rtp, nat, media) >
shared vocabulary (config, errors, events).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
