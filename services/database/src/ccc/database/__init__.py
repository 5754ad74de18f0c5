"""CCC database service."""
