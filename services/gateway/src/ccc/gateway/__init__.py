"""The edge gateway: HTTP in front of the bus, built from what services announce."""
