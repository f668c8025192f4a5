"""The local web page: live view, state, stats and the privacy switch; its JSON API,
/healthz and Prometheus /metrics. An `Output` of the daemon, like MQTT."""
