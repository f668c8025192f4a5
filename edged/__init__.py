"""edged: an on-device facial-expression daemon (Haar cascade + LBPH, results over MQTT)."""

__version__ = "0.1.0"
