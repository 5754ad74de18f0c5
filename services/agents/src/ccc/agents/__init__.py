"""CCC agents service: agents as data, every bus endpoint a tool, durable runs."""
