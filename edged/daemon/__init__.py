"""The long-running service (``edged run``): capture, the fixed-rate loop, its outputs."""
