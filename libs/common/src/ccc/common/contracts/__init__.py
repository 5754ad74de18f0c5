"""Message contracts of the fleet, one module per domain; the source of truth for proto/."""
