"""MQTT and Home Assistant: the daemon's publishing output and its one-shot tools."""
